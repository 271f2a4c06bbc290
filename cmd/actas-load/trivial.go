package main

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// serveTrivial is the comparison: a trivial Go handler on net/http that
// answers introspection-shaped requests (form parsed, Basic credentials
// read) with {"active":false}, in a process of its own as actas is.
func serveTrivial(addr string) {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /introspect", func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); !ok || r.ParseForm() != nil || r.PostForm.Get("token") == "" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"active":false}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, "actas-load: trivial handler:", err)
		os.Exit(1)
	}
}

// trivialServer is the trivial handler's process.
type trivialServer struct {
	cmd *exec.Cmd
	e   *env
}

// startTrivial runs this binary as the trivial handler on a free loopback
// port.
func startTrivial(conns int, tool string) (*trivialServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	ln.Close()
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(self, "-trivial-serve", addr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	e := &env{base: "http://" + addr, pid: cmd.Process.Pid, tool: tool, hc: &http.Client{Timeout: 30 * time.Second,
		Transport: &http.Transport{MaxIdleConns: conns * 2, MaxIdleConnsPerHost: conns * 2, IdleConnTimeout: time.Minute}}}
	if err := e.waitReady(); err != nil {
		cmd.Process.Kill()
		return nil, err
	}
	return &trivialServer{cmd: cmd, e: e}, nil
}

// run drives it exactly as actas's introspection runs are driven.
func (t *trivialServer) run(conns int, d time.Duration, rate int) (result, error) {
	bodies := []string{url.Values{"token": {"x.y.z"}}.Encode()}
	return t.e.load(conns, d, rate, bodies, `{"active":false}`)
}

func (t *trivialServer) stop() {
	t.cmd.Process.Signal(syscall.SIGTERM)
	t.cmd.Wait()
}

// cpuTime is the user and system CPU time a process has used, from
// /proc/PID/stat (clock ticks of 10 ms); 0 where that is not readable.
func cpuTime(pid int) time.Duration {
	own, _ := procCPU(strconv.Itoa(pid))
	return own
}

// procCPU reads /proc/PID/stat: the CPU time the process used, and that
// of its children it has waited for.
func procCPU(pid string) (own, children time.Duration) {
	b, err := os.ReadFile("/proc/" + pid + "/stat")
	if err != nil {
		return 0, 0
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	if len(fields) < 15 {
		return 0, 0
	}
	var t [4]int64
	for i := range t {
		t[i], _ = strconv.ParseInt(fields[11+i], 10, 64)
	}
	return time.Duration(t[0]+t[1]) * 10 * time.Millisecond, time.Duration(t[2]+t[3]) * 10 * time.Millisecond
}

// postgresCPU is the CPU time used by this machine's PostgreSQL server:
// every process named postgres, and the exited children the postmaster
// has reaped (a backend whose connection closed). 0 where /proc is not
// readable.
func postgresCPU() time.Duration {
	dirs, _ := os.ReadDir("/proc")
	var sum time.Duration
	for _, d := range dirs {
		if _, err := strconv.Atoi(d.Name()); err != nil {
			continue
		}
		if comm, err := os.ReadFile("/proc/" + d.Name() + "/comm"); err != nil || strings.TrimSpace(string(comm)) != "postgres" {
			continue
		}
		own, children := procCPU(d.Name())
		sum += own + children
	}
	return sum
}

// ioCount is a process's write system calls and the bytes they wrote.
type ioCount struct{ calls, bytes int64 }

func (a ioCount) minus(b ioCount) ioCount { return ioCount{a.calls - b.calls, a.bytes - b.bytes} }

// writes reads pid's write counters from /proc (zero where there is none).
func writes(pid int) ioCount {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/io")
	if err != nil {
		return ioCount{}
	}
	var c ioCount
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ": ")
		n, _ := strconv.ParseInt(v, 10, 64)
		switch k {
		case "syscw":
			c.calls = n
		case "wchar":
			c.bytes = n
		}
	}
	return c
}
