//go:build linux

package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// clockTick is USER_HZ, the unit of /proc/stat and /proc/PID/stat times.
// Linux fixes it at 100 on every architecture Go supports.
const clockTick = 100

// cpuStat is the machine-wide first line of /proc/stat, in seconds.
type cpuStat struct {
	user, nice, system, idle, iowait, irq, softirq, steal float64
}

func readCPUStat() (cpuStat, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return cpuStat{}, err
	}
	line, _, _ := bytes.Cut(b, []byte("\n"))
	f := strings.Fields(string(line))
	if len(f) < 9 || f[0] != "cpu" {
		return cpuStat{}, fmt.Errorf("/proc/stat: first line %q: want \"cpu user nice system idle iowait irq softirq steal ...\"", line)
	}
	v := make([]float64, 8)
	for i := range v {
		n, err := strconv.ParseUint(f[i+1], 10, 64)
		if err != nil {
			return cpuStat{}, fmt.Errorf("/proc/stat: field %d %q: %w", i+1, f[i+1], err)
		}
		v[i] = float64(n) / clockTick
	}
	return cpuStat{v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]}, nil
}

func (a cpuStat) sub(b cpuStat) cpuStat {
	return cpuStat{a.user - b.user, a.nice - b.nice, a.system - b.system, a.idle - b.idle,
		a.iowait - b.iowait, a.irq - b.irq, a.softirq - b.softirq, a.steal - b.steal}
}

// sysSoftirq is kernel time: system calls and softirq (where the kernel
// forwards packets), plus hard interrupts.
func (a cpuStat) sysSoftirq() float64 { return a.system + a.irq + a.softirq }

// busy is every CPU second not idle: user, system and interrupt time.
func (a cpuStat) busy() float64 { return a.user + a.nice + a.sysSoftirq() }

// procCPU returns a process's user and system CPU seconds (utime, stime
// of /proc/PID/stat; all its threads, not its children).
func procCPU(pid int) (float64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name, field 2, is in parentheses and may hold spaces.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields after the name, want at least 13", pid, len(f))
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	s, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return float64(u+s) / clockTick, nil
}

// procMemory returns a process's VmRSS and VmHWM (peak RSS) in bytes.
func procMemory(pid int) (rss, hwm uint64, err error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if !ok || (k != "VmRSS" && k != "VmHWM") {
			continue
		}
		fs := strings.Fields(v) // "12345 kB"
		if len(fs) != 2 || fs[1] != "kB" {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %q", pid, k, v)
		}
		n, err := strconv.ParseUint(fs[0], 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/%d/status: %s: %w", pid, k, err)
		}
		if k == "VmRSS" {
			rss = n << 10
		} else {
			hwm = n << 10
		}
	}
	if err := sc.Err(); err != nil {
		return 0, 0, err
	}
	if rss == 0 {
		return 0, 0, fmt.Errorf("/proc/%d/status: no VmRSS (a kernel thread, or exited?)", pid)
	}
	return rss, hwm, nil
}

// procComm is a process's command name.
func procComm(pid int) string {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
	return strings.TrimSpace(string(b))
}

// machine describes where the benchmark ran.
type machine struct {
	CPUs     int    `json:"cpus"`
	CPUModel string `json:"cpu_model"`
	Kernel   string `json:"kernel"`
	Go       string `json:"go"`
	Iptables string `json:"iptables"`
	Iperf3   string `json:"iperf3"`
	Nginx    string `json:"nginx,omitempty"`
	Wrk      string `json:"wrk,omitempty"`
	// WireGuardGo is the wireguard-go baseline's version, when measured.
	WireGuardGo string     `json:"wireguard_go,omitempty"`
	Commit      string     `json:"commit,omitempty"`
	LoadStart   [3]float64 `json:"loadavg_start"`
	LoadEnd     [3]float64 `json:"loadavg_end"`
}

func describeMachine() machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version()}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	m.LoadStart = loadAvg()
	return m
}

func loadAvg() [3]float64 {
	var l [3]float64
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return l
	}
	f := strings.Fields(string(b))
	for i := 0; i < 3 && i < len(f); i++ {
		l[i], _ = strconv.ParseFloat(f[i], 64)
	}
	return l
}
