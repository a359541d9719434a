package kube_test

import (
	"fmt"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/vrouter/vrouter/configs/kube"
	"github.com/vrouter/vrouter/lb"
)

// TestServices feeds each shape of Service and EndpointSlices to a Source
// and checks the Service table the Sink is given.
func TestServices(t *testing.T) {
	p80 := lb.EndpointPort{Name: unnamed, Port: 80, Proto: lb.TCP}
	tests := []struct {
		name string
		opts kube.Options
		objs []runtime.Object
		want []lb.Service
		// logged, if set, is a warning the Source must log.
		logged      string
		skippedSCTP int
	}{
		{
			name: "seed my-service",
			objs: []runtime.Object{makeService("default", "my-service"), mySlice()},
			want: []lb.Service{wantService("default", "my-service")},
		},
		{
			name: "seed kube-dns with named ports per protocol",
			objs: []runtime.Object{makeKubeDNS(), dnsSlice()},
			want: []lb.Service{wantKubeDNS()},
		},
		{
			name: "both seed Services, each with its own slices",
			objs: []runtime.Object{makeService("default", "my-service"), mySlice(), makeKubeDNS(), dnsSlice()},
			want: []lb.Service{wantService("default", "my-service"), wantKubeDNS()},
		},
		{
			name: "numeric targetPort: the slice's port is the backend port",
			objs: []runtime.Object{
				makeService("default", "my-service", func(s *corev1.Service) { s.Spec.Ports[0].TargetPort = intstr.FromInt32(8080) }),
				mySlice(func(es *discoveryv1.EndpointSlice) { es.Ports[0].Port = ptr.To[int32](8080) }),
			},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				for i := range s.Endpoints {
					s.Endpoints[i].Ports[0].Port = 8080
				}
			})},
		},
		{
			name: "named targetPort resolved per endpoint from the slices",
			objs: []runtime.Object{
				makeService("default", "web", func(s *corev1.Service) {
					s.Spec.Ports[0].Name, s.Spec.Ports[0].TargetPort = "http", intstr.FromString("web")
				}),
				makeSlice("default", "web-a", "web", []discoveryv1.Endpoint{endpoint("10.244.0.4", masterNode)},
					func(es *discoveryv1.EndpointSlice) {
						es.Ports = []discoveryv1.EndpointPort{slicePort("http", 8080, corev1.ProtocolTCP)}
					}),
				makeSlice("default", "web-b", "web", []discoveryv1.Endpoint{endpoint("10.244.1.2", workerNode)},
					func(es *discoveryv1.EndpointSlice) {
						es.Ports = []discoveryv1.EndpointPort{slicePort("http", 9090, corev1.ProtocolTCP)}
					}),
			},
			want: []lb.Service{wantService("default", "web", func(s *lb.Service) {
				s.Ports = []lb.ServicePort{{Name: "http", Port: 80, Proto: lb.TCP, TargetPortName: "http"}}
				s.Endpoints = []lb.Endpoint{
					wantEndpoint("10.244.0.4", masterNode, lb.EndpointPort{Name: "http", Port: 8080, Proto: lb.TCP}),
					wantEndpoint("10.244.1.2", workerNode, lb.EndpointPort{Name: "http", Port: 9090, Proto: lb.TCP}),
				}
			})},
		},
		{
			name: "dual-stack ClusterIPs and one slice per family",
			objs: []runtime.Object{
				makeService("default", "my-service", func(s *corev1.Service) {
					s.Spec.ClusterIPs = []string{"10.103.92.81", "fd00:10:96::5c51"}
					s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
				}),
				makeSlice("default", "my-service-v4", "my-service", []discoveryv1.Endpoint{endpoint("10.244.0.4", masterNode)}),
				makeSlice("default", "my-service-v6", "my-service", []discoveryv1.Endpoint{endpoint("fd00:10:244::4", masterNode)},
					func(es *discoveryv1.EndpointSlice) { es.AddressType = discoveryv1.AddressTypeIPv6 }),
			},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.ClusterIPs = append(s.ClusterIPs, netip.MustParseAddr("fd00:10:96::5c51"))
				s.Endpoints = []lb.Endpoint{wantEndpoint("10.244.0.4", masterNode, p80), wantEndpoint("fd00:10:244::4", masterNode, p80)}
			})},
		},
		{
			name: "headless Service skipped",
			objs: []runtime.Object{
				makeService("default", "db", func(s *corev1.Service) {
					s.Spec.ClusterIP, s.Spec.ClusterIPs = corev1.ClusterIPNone, []string{corev1.ClusterIPNone}
				}),
				makeSlice("default", "db-x", "db", []discoveryv1.Endpoint{endpoint("10.244.0.9", masterNode)}),
			},
			want: nil,
		},
		{
			name: "ExternalName Service skipped",
			objs: []runtime.Object{makeService("default", "ext", func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
			})},
			want: nil,
		},

		// Service types and traffic from outside.
		{
			name: "ClusterIP Service with externalIPs and externalTrafficPolicy Local",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"203.0.113.10", "192.168.31.201"}
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.ExternalIPs = addrs("203.0.113.10", "192.168.31.201")
				s.ExternalTrafficPolicy = lb.PolicyLocal
			})},
		},
		{
			name: "ClusterIP Service without externalIPs: externalTrafficPolicy Local does not apply",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service")},
		},
		{
			name: "NodePort Service: a node port per port, TCP and UDP",
			objs: []runtime.Object{makeKubeDNS(func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyCluster
				s.Spec.Ports[0].NodePort, s.Spec.Ports[1].NodePort, s.Spec.Ports[2].NodePort = 30053, 30053, 30153
			}), dnsSlice()},
			want: []lb.Service{func() lb.Service {
				s := wantKubeDNS()
				s.Type = lb.TypeNodePort
				s.Ports[0].NodePort, s.Ports[1].NodePort, s.Ports[2].NodePort = 30053, 30053, 30153
				return s
			}()},
		},
		{
			name: "NodePort Service with externalTrafficPolicy Local has no health check",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				s.Spec.HealthCheckNodePort = 32000 // the API server allows none: ignored
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.Type, s.Ports[0].NodePort, s.ExternalTrafficPolicy = lb.TypeNodePort, 30080, lb.PolicyLocal
			})},
		},
		{
			name: "LoadBalancer Service: ingress IPs, but not hostnames or ipMode Proxy",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30080
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{
					{IP: "203.0.113.20"},
					{Hostname: "my-service.elb.example.com"},
					{IP: "203.0.113.21", IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)},
					{IP: "203.0.113.22", IPMode: ptr.To(corev1.LoadBalancerIPModeProxy)},
					{IP: "203.0.113.23", Hostname: "both.example.com", Ports: []corev1.PortStatus{{Port: 80, Protocol: corev1.ProtocolTCP}}},
				}
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.Type, s.Ports[0].NodePort = lb.TypeLoadBalancer, 30080
				s.LoadBalancerIPs = addrs("203.0.113.20", "203.0.113.21", "203.0.113.23")
			})},
		},
		{
			name: "LoadBalancer Service with externalTrafficPolicy Local and its health check node port",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				s.Spec.HealthCheckNodePort = 32000
				s.Spec.ExternalIPs = []string{"203.0.113.10"}
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.20"}}
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.Type, s.Ports[0].NodePort = lb.TypeLoadBalancer, 30080
				s.ExternalTrafficPolicy, s.HealthCheckNodePort = lb.PolicyLocal, 32000
				s.ExternalIPs, s.LoadBalancerIPs = addrs("203.0.113.10"), addrs("203.0.113.20")
			})},
		},
		{
			name: "LoadBalancer Service without node ports (allocateLoadBalancerNodePorts false)",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.AllocateLoadBalancerNodePorts = ptr.To(false)
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.20"}}
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.Type, s.LoadBalancerIPs = lb.TypeLoadBalancer, addrs("203.0.113.20")
			})},
		},
		{
			name: "LoadBalancer Service still pending: no ingress yet",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30080
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.Type, s.Ports[0].NodePort = lb.TypeLoadBalancer, 30080 })},
		},
		{
			name: "dual-stack external and ingress IPs",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.ClusterIPs = []string{"10.103.92.81", "fd00:10:96::5c51"}
				s.Spec.ExternalIPs = []string{"2001:db8::10", "203.0.113.10"}
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.20"}, {IP: "2001:db8::20"}}
			})},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.ClusterIPs = addrs("10.103.92.81", "fd00:10:96::5c51")
				s.Type, s.Endpoints = lb.TypeLoadBalancer, nil
				s.ExternalIPs, s.LoadBalancerIPs = addrs("2001:db8::10", "203.0.113.10"), addrs("203.0.113.20", "2001:db8::20")
			})},
		},
		{
			name: "an address in both externalIPs and the ingress is served once",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.ExternalIPs = []string{"203.0.113.10"}
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.10"}, {IP: "203.0.113.20"}, {IP: "203.0.113.20"}}
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.Type, s.ExternalIPs, s.LoadBalancerIPs = lb.TypeLoadBalancer, addrs("203.0.113.10"), addrs("203.0.113.20")
			})},
		},
		{
			name: "ExternalName Service with node ports and externalIPs still skipped",
			objs: []runtime.Object{makeService("default", "ext", func(s *corev1.Service) {
				s.Spec.Type, s.Spec.ExternalName = corev1.ServiceTypeExternalName, "example.com"
				s.Spec.ClusterIP, s.Spec.ClusterIPs = "", nil
				s.Spec.ExternalIPs = []string{"203.0.113.10"}
				s.Spec.Ports[0].NodePort = 30080
			})},
			want: nil,
		},

		// Odd objects: what is odd is dropped and logged, the rest served.
		{
			name: "unparsable external IP dropped",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"not-an-ip", "203.0.113.10", "fe80::1%eth0"}
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.ExternalIPs = addrs("203.0.113.10") })},
			logged: `spec.externalIPs[0] "not-an-ip" is not an IP address; ignoring it`,
		},
		{
			name: "unparsable ingress IP dropped",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.256"}, {IP: "203.0.113.20"}}
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.Type, s.LoadBalancerIPs = lb.TypeLoadBalancer, addrs("203.0.113.20") })},
			logged: `status.loadBalancer.ingress[0].ip "203.0.113.256" is not an IP address; ignoring it`,
		},
		{
			name: "loopback and unspecified external IPs dropped",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"127.0.0.1", "0.0.0.0", "224.0.0.1", "203.0.113.10"}
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.ExternalIPs = addrs("203.0.113.10") })},
			logged: "spec.externalIPs[0] 127.0.0.1 is not a unicast address",
		},
		{
			name: "external IP that is the ClusterIP dropped",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"10.103.92.81"}
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service")},
			logged: "spec.externalIPs[0] 10.103.92.81 is also a ClusterIP of the Service",
		},
		{
			name: "external IP of a family without ClusterIP dropped",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.ExternalIPs = []string{"2001:db8::10"}
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service")},
			logged: "spec.externalIPs[0] 2001:db8::10 has no ClusterIP of its family",
		},
		{
			name: "ingress on a Service that is not a LoadBalancer ignored",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "203.0.113.20"}}
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.Type, s.Ports[0].NodePort = lb.TypeNodePort, 30080 })},
			logged: "status.loadBalancer.ingress is set on a Service of type NodePort; ignoring it",
		},
		{
			name: "nodePort out of range dropped, the port served",
			objs: []runtime.Object{makeKubeDNS(func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort, s.Spec.Ports[1].NodePort, s.Spec.Ports[2].NodePort = 70000, -1, 30153
			}), dnsSlice()},
			want: []lb.Service{func() lb.Service {
				s := wantKubeDNS()
				s.Type, s.Ports[2].NodePort = lb.TypeNodePort, 30153
				return s
			}()},
			logged: "spec.ports[0].nodePort 70000 is out of range (want 1..65535); not serving a node port for this port",
		},
		{
			name: "nodePort twice with one protocol: the first port keeps it",
			objs: []runtime.Object{makeKubeDNS(func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort, s.Spec.Ports[1].NodePort, s.Spec.Ports[2].NodePort = 30053, 30053, 30053
			}), dnsSlice()},
			want: []lb.Service{func() lb.Service {
				s := wantKubeDNS()
				s.Type, s.Ports[0].NodePort, s.Ports[1].NodePort = lb.TypeNodePort, 30053, 30053
				return s
			}()},
			logged: "spec.ports[2].nodePort 30053/TCP is another port's node port too",
		},
		{
			name: "unknown externalTrafficPolicy is Cluster",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeNodePort
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = "Global"
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.Type, s.Ports[0].NodePort = lb.TypeNodePort, 30080 })},
			logged: `spec.externalTrafficPolicy "Global" is not Cluster or Local; using Cluster`,
		},
		{
			name: "healthCheckNodePort out of range dropped",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				s.Spec.HealthCheckNodePort = 65536
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.Type, s.ExternalTrafficPolicy = lb.TypeLoadBalancer, lb.PolicyLocal })},
			logged: "spec.healthCheckNodePort 65536 is out of range",
		},
		{
			name: "healthCheckNodePort that is a TCP node port dropped",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.Ports[0].NodePort = 30080
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
				s.Spec.HealthCheckNodePort = 30080
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.Type, s.Ports[0].NodePort, s.ExternalTrafficPolicy = lb.TypeLoadBalancer, 30080, lb.PolicyLocal
			})},
			logged: "spec.healthCheckNodePort 30080 is also a TCP node port of the Service",
		},
		{
			name: "LoadBalancer Service with policy Local but no healthCheckNodePort",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = corev1.ServiceTypeLoadBalancer
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.Type, s.ExternalTrafficPolicy = lb.TypeLoadBalancer, lb.PolicyLocal })},
			logged: "spec.healthCheckNodePort is not set",
		},
		{
			name: "unknown type served as ClusterIP",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.Type = "Gateway"
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service")},
			logged: `spec.type "Gateway" is not ClusterIP, NodePort, LoadBalancer or ExternalName; serving it as ClusterIP`,
		},
		{
			name: "SCTP port skipped, the rest served",
			objs: []runtime.Object{
				makeService("default", "my-service", func(s *corev1.Service) {
					s.Spec.Ports[0].Name = "http"
					s.Spec.Ports = append(s.Spec.Ports, corev1.ServicePort{Name: "sig", Port: 3868, Protocol: corev1.ProtocolSCTP})
				}),
				mySlice(func(es *discoveryv1.EndpointSlice) {
					es.Ports = []discoveryv1.EndpointPort{slicePort("http", 80, corev1.ProtocolTCP), slicePort("sig", 3868, corev1.ProtocolSCTP)}
				}),
			},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.Ports = []lb.ServicePort{{Name: "http", Port: 80, Proto: lb.TCP, TargetPortName: "http"}}
				for i := range s.Endpoints {
					s.Endpoints[i].Ports = []lb.EndpointPort{{Name: "http", Port: 80, Proto: lb.TCP}}
				}
			})},
			logged:      "SCTP is not supported",
			skippedSCTP: 1,
		},
		{
			name: "SCTP-only Service skipped",
			objs: []runtime.Object{makeService("default", "diameter", func(s *corev1.Service) {
				s.Spec.Ports = []corev1.ServicePort{{Port: 3868, Protocol: corev1.ProtocolSCTP}}
			})},
			want:        nil,
			logged:      "SCTP is not supported",
			skippedSCTP: 1,
		},
		{
			name: "conditions: nil ready and serving mean true, nil terminating false",
			objs: []runtime.Object{
				makeService("default", "my-service"),
				mySlice(func(es *discoveryv1.EndpointSlice) {
					es.Endpoints[0].Conditions = discoveryv1.EndpointConditions{}
					es.Endpoints[1].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Terminating: ptr.To(true)}
					es.Endpoints[2].Conditions = discoveryv1.EndpointConditions{Ready: ptr.To(false), Serving: ptr.To(false)}
				}),
			},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				s.Endpoints[1].Ready, s.Endpoints[1].Serving, s.Endpoints[1].Terminating = false, true, true
				s.Endpoints[2].Ready, s.Endpoints[2].Serving = false, false
			})},
		},
		{
			name: "several slices merged, deduplicated by address, ports merged",
			objs: []runtime.Object{
				makeService("default", "my-service", func(s *corev1.Service) {
					s.Spec.Ports = []corev1.ServicePort{
						{Name: "http", Port: 80, Protocol: corev1.ProtocolTCP},
						{Name: "https", Port: 443, Protocol: corev1.ProtocolTCP},
					}
				}),
				makeSlice("default", "my-service-1", "my-service",
					[]discoveryv1.Endpoint{endpoint("10.244.1.2", workerNode), endpoint("10.244.0.4", masterNode)},
					func(es *discoveryv1.EndpointSlice) {
						es.Ports = []discoveryv1.EndpointPort{slicePort("http", 80, corev1.ProtocolTCP)}
					}),
				makeSlice("default", "my-service-2", "my-service",
					[]discoveryv1.Endpoint{endpoint("10.244.1.3", workerNode), endpoint("10.244.1.2", workerNode)},
					func(es *discoveryv1.EndpointSlice) {
						es.Ports = []discoveryv1.EndpointPort{slicePort("https", 443, corev1.ProtocolTCP), slicePort("http", 80, corev1.ProtocolTCP)}
					}),
			},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				http, https := lb.EndpointPort{Name: "http", Port: 80, Proto: lb.TCP}, lb.EndpointPort{Name: "https", Port: 443, Proto: lb.TCP}
				s.Ports = []lb.ServicePort{{Name: "http", Port: 80, Proto: lb.TCP, TargetPortName: "http"}, {Name: "https", Port: 443, Proto: lb.TCP, TargetPortName: "https"}}
				s.Endpoints = []lb.Endpoint{
					wantEndpoint("10.244.0.4", masterNode, http),
					wantEndpoint("10.244.1.2", workerNode, http, https),
					wantEndpoint("10.244.1.3", workerNode, http, https),
				}
			})},
		},
		{
			name: "Service without EndpointSlices has no endpoints",
			objs: []runtime.Object{makeService("default", "my-service")},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.Endpoints = nil })},
		},
		{
			name: "slices of another Service, FQDN slices, headless slices and bad entries ignored",
			objs: []runtime.Object{
				makeService("default", "my-service"),
				mySlice(func(es *discoveryv1.EndpointSlice) {
					es.Endpoints = append(es.Endpoints,
						discoveryv1.Endpoint{Addresses: nil},
						discoveryv1.Endpoint{Addresses: []string{"not-an-ip"}})
					es.Ports = append(es.Ports, discoveryv1.EndpointPort{Name: ptr.To("noport")}, discoveryv1.EndpointPort{Port: ptr.To[int32](81)})
				}),
				makeSlice("default", "other-xyz", "other", []discoveryv1.Endpoint{endpoint("10.244.0.7", masterNode)}),
				makeSlice("default", "my-service-fqdn", "my-service", []discoveryv1.Endpoint{{Addresses: []string{"nginx.example.com"}}},
					func(es *discoveryv1.EndpointSlice) { es.AddressType = discoveryv1.AddressTypeFQDN }),
				makeSlice("default", "my-service-headless", "my-service", []discoveryv1.Endpoint{endpoint("10.244.0.8", masterNode)},
					func(es *discoveryv1.EndpointSlice) { es.Labels[corev1.IsHeadlessService] = "" }),
			},
			want:   []lb.Service{wantService("default", "my-service")},
			logged: `address "not-an-ip" is not an IP address`,
		},
		{
			name: "session affinity ClientIP with and without a timeout",
			objs: []runtime.Object{
				makeService("default", "my-service", func(s *corev1.Service) {
					s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP
					s.Spec.SessionAffinityConfig = &corev1.SessionAffinityConfig{ClientIP: &corev1.ClientIPConfig{TimeoutSeconds: ptr.To[int32](60)}}
				}),
				makeKubeDNS(func(s *corev1.Service) { s.Spec.SessionAffinity = corev1.ServiceAffinityClientIP }),
			},
			want: []lb.Service{
				wantService("default", "my-service", func(s *lb.Service) {
					s.Endpoints = nil
					s.SessionAffinity, s.SessionAffinityTimeout = lb.AffinityClientIP, time.Minute
				}),
				func() lb.Service {
					s := wantKubeDNS()
					s.Endpoints = nil
					s.SessionAffinity, s.SessionAffinityTimeout = lb.AffinityClientIP, 3*time.Hour
					return s
				}(),
			},
		},
		{
			name: "internalTrafficPolicy Local",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Spec.InternalTrafficPolicy = ptr.To(corev1.ServiceInternalTrafficPolicyLocal)
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.InternalTrafficPolicy = lb.PolicyLocal })},
		},
		{
			name: "trafficDistribution hints and zones",
			objs: []runtime.Object{
				makeService("default", "my-service", func(s *corev1.Service) {
					s.Spec.TrafficDistribution = ptr.To(corev1.ServiceTrafficDistributionPreferSameNode)
				}),
				mySlice(func(es *discoveryv1.EndpointSlice) {
					for i := range es.Endpoints {
						e := &es.Endpoints[i]
						zone := "zone-a"
						if *e.NodeName == workerNode {
							zone = "zone-b"
						}
						e.Zone = ptr.To(zone)
						e.Hints = &discoveryv1.EndpointHints{ForZones: []discoveryv1.ForZone{{Name: zone}}, ForNodes: []discoveryv1.ForNode{{Name: *e.NodeName}}}
					}
				}),
			},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) {
				for i := range s.Endpoints {
					e := &s.Endpoints[i]
					e.Zone = map[string]string{masterNode: "zone-a", workerNode: "zone-b"}[e.NodeName]
					e.ForZones, e.ForNodes = []string{e.Zone}, []string{e.NodeName}
				}
			})},
		},
		{
			name: "mode and picker annotations",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Annotations = map[string]string{kube.AnnotationMode: "proxy", kube.AnnotationPicker: "maglev"}
			}), mySlice()},
			want: []lb.Service{wantService("default", "my-service", func(s *lb.Service) { s.Mode, s.Picker = lb.ModeProxy, lb.PickMaglev })},
		},
		{
			name: "bad mode and picker annotations logged and ignored",
			objs: []runtime.Object{makeService("default", "my-service", func(s *corev1.Service) {
				s.Annotations = map[string]string{kube.AnnotationMode: "dsr", kube.AnnotationPicker: "fastest"}
			}), mySlice()},
			want:   []lb.Service{wantService("default", "my-service")},
			logged: `picker "fastest": want random, round-robin, least-connections or maglev`,
		},
		{
			name: "Service of another proxy skipped",
			objs: []runtime.Object{
				makeService("default", "my-service", func(s *corev1.Service) { s.Labels = map[string]string{kube.LabelServiceProxyName: "cilium"} }),
				mySlice(func(es *discoveryv1.EndpointSlice) { es.Labels[kube.LabelServiceProxyName] = "cilium" }),
				makeKubeDNS(), dnsSlice(),
			},
			want: []lb.Service{wantKubeDNS()},
		},
		{
			name: "ProxyName serves its own Services and unlabelled ones",
			opts: kube.Options{ProxyName: "vrouter"},
			objs: []runtime.Object{
				makeService("default", "my-service", func(s *corev1.Service) { s.Labels = map[string]string{kube.LabelServiceProxyName: "vrouter"} }),
				mySlice(func(es *discoveryv1.EndpointSlice) { es.Labels[kube.LabelServiceProxyName] = "vrouter" }),
				makeService("default", "theirs", func(s *corev1.Service) {
					s.Labels = map[string]string{kube.LabelServiceProxyName: "cilium"}
					s.Spec.ClusterIP, s.Spec.ClusterIPs = "10.96.7.7", []string{"10.96.7.7"}
				}),
				makeKubeDNS(), dnsSlice(),
			},
			want: []lb.Service{wantService("default", "my-service"), wantKubeDNS()},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t, tt.opts, tt.objs...).start()
			e.waitSynced()
			got := e.rec.Services()
			if len(got) == 0 {
				got = nil
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Services after the initial sync:\n got %s\nwant %s", dump(got), dump(tt.want))
			}
			if tt.logged != "" && !e.logged(zapcore.WarnLevel, tt.logged) {
				t.Errorf("no warning containing %q; logs: %v", tt.logged, messages(e))
			}
			if got := e.src.Stats().SkippedSCTPPorts; got != tt.skippedSCTP {
				t.Errorf("Stats().SkippedSCTPPorts = %d, want %d", got, tt.skippedSCTP)
			}
		})
	}
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func dump(svcs []lb.Service) string {
	s := "["
	for _, v := range svcs {
		s += fmt.Sprintf("\n  %+v", v)
	}
	return s + "]"
}

func messages(e *env) []string {
	var out []string
	for _, l := range e.logs.All() {
		out = append(out, l.Level.String()+": "+l.Message)
	}
	return out
}
