package cluster

import (
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// kubeletSysctls are the global kernel settings the kubelet rewrites
// (kernel.panic=10, vm.overcommit_memory=1, ...); Close puts them back.
var kubeletSysctls = []string{
	"kernel/panic", "kernel/panic_on_oops", "vm/overcommit_memory", "vm/panic_on_oom",
	"kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes",
}

// nodePrivatePaths are the host paths each node gets its own directory
// at, bind-mounted inside the node's mount namespace: paths the kubelet,
// containerd and the CNI plugins hard-code, and node-local state that
// hostPath volumes name.
var nodePrivatePaths = []string{
	"/var/lib/kubelet/device-plugins",
	"/var/log/containers",
	"/var/log/pods",
	"/var/lib/cni",
	"/run/containerd",
	"/etc/cni/net.d",
	"/run/vrouter",
	"/var/lib/vrouter", // the router's WireGuard key: each node its own, as on its own disk
}

// hostState is what the cluster changes on the host and Close undoes.
type hostState struct {
	sysctls map[string]string // path under /proc/sys → value before
	dirs    []string          // directories made for mount points, outermost first
	cgroups []string          // cgroup directories made, in creation order
}

// prepareHost saves the sysctls the kubelets change and makes the mount
// points of nodePrivatePaths that do not exist yet.
func prepareHost() (*hostState, error) {
	h := &hostState{sysctls: make(map[string]string)}
	for _, s := range kubeletSysctls {
		b, err := os.ReadFile("/proc/sys/" + s)
		if err != nil {
			continue // not on this kernel: the kubelet will not set it either
		}
		h.sysctls[s] = strings.TrimSpace(string(b))
	}
	for _, p := range nodePrivatePaths {
		if err := h.mkdirAll(p); err != nil {
			return h, err
		}
	}
	return h, nil
}

// mkdirAll makes dir and its missing parents, remembering each it made.
func (h *hostState) mkdirAll(dir string) error {
	var missing []string
	for d := dir; d != "/"; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil {
			break
		}
		missing = append(missing, d)
	}
	for i := len(missing) - 1; i >= 0; i-- {
		if err := os.Mkdir(missing[i], 0o755); err != nil && !errors.Is(err, os.ErrExist) {
			return fmt.Errorf("make mount point %s: %w", missing[i], err)
		}
		h.dirs = append(h.dirs, missing[i])
	}
	return nil
}

// cgroupHierarchies are the cgroup v1 hierarchies (or the v2 root).
func cgroupHierarchies() ([]string, error) {
	if _, err := os.Stat("/sys/fs/cgroup/cgroup.controllers"); err == nil {
		return []string{"/sys/fs/cgroup"}, nil // the unified hierarchy (v2)
	}
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		return nil, err
	}
	var hs []string
	for _, e := range entries {
		if e.IsDir() {
			hs = append(hs, filepath.Join("/sys/fs/cgroup", e.Name()))
		}
	}
	return hs, nil
}

// makeCgroupRoot makes the cgroup root of one kubelet in every
// hierarchy (cpuset with the parent's CPUs and memory nodes, which a new
// v1 cpuset lacks).
func (h *hostState) makeCgroupRoot(name string) error {
	hs, err := cgroupHierarchies()
	if err != nil {
		return err
	}
	for _, hier := range hs {
		d := filepath.Join(hier, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			return fmt.Errorf("make cgroup %s: %w", d, err)
		}
		h.cgroups = append(h.cgroups, d)
		if filepath.Base(hier) == "cpuset" {
			for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
				b, err := os.ReadFile(filepath.Join(hier, f))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(d, f), b, 0o644); err != nil {
					return fmt.Errorf("set %s/%s: %w", d, f, err)
				}
			}
		}
	}
	return nil
}

// cgroupPIDs lists every process in the cgroup trees named name.
func cgroupPIDs(name string) []int {
	hs, _ := cgroupHierarchies()
	seen := make(map[int]bool)
	var pids []int
	for _, hier := range hs {
		root := filepath.Join(hier, name)
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && !seen[pid] {
					seen[pid] = true
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// removeCgroups removes the cgroup trees made by makeCgroupRoot, deepest
// first.
func (h *hostState) removeCgroups() error {
	var errs []error
	for i := len(h.cgroups) - 1; i >= 0; i-- {
		root := h.cgroups[i]
		var dirs []string
		_ = filepath.WalkDir(root, func(path string, d os.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for j := len(dirs) - 1; j >= 0; j-- {
			if err := os.Remove(dirs[j]); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, fmt.Errorf("remove cgroup %s: %w", dirs[j], err))
			}
		}
	}
	h.cgroups = nil
	return errors.Join(errs...)
}

// restore puts back the sysctls, removes the cgroups and the mount
// points prepareHost made.
func (h *hostState) restore() error {
	if h == nil {
		return nil
	}
	var errs []error
	for s, v := range h.sysctls {
		if err := os.WriteFile("/proc/sys/"+s, []byte(v+"\n"), 0); err != nil {
			errs = append(errs, fmt.Errorf("restore sysctl %s=%s: %w", s, v, err))
		}
	}
	errs = append(errs, h.removeCgroups())
	for i := len(h.dirs) - 1; i >= 0; i-- {
		if err := os.Remove(h.dirs[i]); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove mount point %s: %w", h.dirs[i], err))
		}
	}
	return errors.Join(errs...)
}

// insecureTLS is for the health endpoints of kube-controller-manager and
// kube-scheduler, which serve self-signed certificates.
func insecureTLS() *tls.Config {
	return &tls.Config{InsecureSkipVerify: true} //nolint:gosec // loopback health checks of test processes
}
