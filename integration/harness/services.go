package harness

import "github.com/vrouter/vrouter/configs"

// Seed Service addresses.
const (
	MyServiceIP = "10.103.92.81"
	KubeDNSIP   = "10.96.0.10"
)

// SeedServices are the seed's two Services, with the seed's endpoints:
//
//	default/my-service   10.103.92.81:80/TCP   -> 10.244.0.4:80 (hostgw-master),
//	                                              10.244.1.2:80, 10.244.1.3:80 (hostgw-node)
//	kube-system/kube-dns 10.96.0.10 53/UDP dns, 53/TCP dns-tcp, 9153/TCP metrics
//	                                           -> 10.244.0.2, 10.244.0.3 (hostgw-master)
//
// picker is the my-service picker ("" for the default, random).
func SeedServices(picker string) []configs.ServiceSpec {
	return []configs.ServiceSpec{
		{
			Namespace:  "default",
			Name:       "my-service",
			ClusterIPs: []string{MyServiceIP},
			Picker:     picker,
			Ports:      []configs.ServicePortSpec{{Port: 80, Protocol: "TCP"}},
			Endpoints: []configs.EndpointSpec{
				{Addresses: []string{"10.244.0.4"}, NodeName: "hostgw-master"},
				{Addresses: []string{"10.244.1.2"}, NodeName: "hostgw-node"},
				{Addresses: []string{"10.244.1.3"}, NodeName: "hostgw-node"},
			},
		},
		{
			Namespace:  "kube-system",
			Name:       "kube-dns",
			ClusterIPs: []string{KubeDNSIP},
			Ports: []configs.ServicePortSpec{
				{Name: "dns", Port: 53, Protocol: "UDP", TargetPort: "53"},
				{Name: "dns-tcp", Port: 53, Protocol: "TCP", TargetPort: "53"},
				{Name: "metrics", Port: 9153, Protocol: "TCP", TargetPort: "9153"},
			},
			Endpoints: []configs.EndpointSpec{
				{Addresses: []string{"10.244.0.2"}, NodeName: "hostgw-master"},
				{Addresses: []string{"10.244.0.3"}, NodeName: "hostgw-master"},
			},
		},
	}
}
