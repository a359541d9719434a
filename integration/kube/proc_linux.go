package kube

import "syscall"

// procAttr puts a child in a process group of its own and makes the
// kernel kill it when the test binary exits, however it exits.
func procAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}
