package main

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// wrkRun drives POST /introspect at base with wrk (-t2, conns
// connections, for d), cycling through bodies, as the issue's own
// measurements did; it needs wrk on PATH.
func wrkRun(base string, conns int, d time.Duration, bodies []string) (result, error) {
	dir, err := os.MkdirTemp("", "actas-wrk-")
	if err != nil {
		return result{}, err
	}
	defer os.RemoveAll(dir)
	var b strings.Builder
	b.WriteString("wrk.method = \"POST\"\n")
	fmt.Fprintf(&b, "wrk.headers[\"Content-Type\"] = \"application/x-www-form-urlencoded\"\nwrk.headers[\"Authorization\"] = \"Basic %s\"\n",
		base64.StdEncoding.EncodeToString([]byte("product:"+productSecret)))
	b.WriteString("local bodies = {\n")
	for _, body := range bodies {
		fmt.Fprintf(&b, "  %q,\n", body)
	}
	b.WriteString("}\nlocal i = 0\nrequest = function()\n  i = i + 1\n  return wrk.format(nil, nil, nil, bodies[(i % #bodies) + 1])\nend\n")
	b.WriteString("response = function(status, headers, body)\n  if status ~= 200 then wrk.thread:stop() end\nend\n")
	script := filepath.Join(dir, "introspect.lua")
	if err := os.WriteFile(script, []byte(b.String()), 0o600); err != nil {
		return result{}, err
	}
	out, err := exec.Command("wrk", "-t2", "-c"+strconv.Itoa(conns), "-d"+strconv.Itoa(int(d.Seconds()))+"s", "--latency",
		"-s", script, base+"/introspect").CombinedOutput()
	if err != nil {
		return result{}, fmt.Errorf("wrk: %v\n%s", err, out)
	}
	return parseWrk(string(out))
}

var (
	wrkReqs   = regexp.MustCompile(`(\d+) requests in ([\d.]+)(ms|s|m)`)
	wrkNon2xx = regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`)
	wrkPct    = regexp.MustCompile(`(?m)^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)`)
)

// parseWrk reads the request count, elapsed time, errors and the p50 and
// p99 latencies from wrk --latency output. The result carries only those
// two percentiles.
func parseWrk(out string) (result, error) {
	m := wrkReqs.FindStringSubmatch(out)
	if m == nil {
		return result{}, fmt.Errorf("wrk: unexpected output:\n%s", out)
	}
	n, _ := strconv.Atoi(m[1])
	el, _ := time.ParseDuration(m[2] + m[3])
	res := result{n: n, elapsed: el}
	if e := wrkNon2xx.FindStringSubmatch(out); e != nil {
		res.errors, _ = strconv.Atoi(e[1])
		res.firstErr = "non-2xx answers"
	}
	pct := map[string]time.Duration{}
	for _, p := range wrkPct.FindAllStringSubmatch(out, -1) {
		d, _ := time.ParseDuration(p[2] + p[3])
		pct[p[1]] = d
	}
	// Two latencies stand for the distribution: p(q) reads index q*(len-1).
	res.lat = make([]time.Duration, 101)
	for i := range res.lat {
		if i < 99 {
			res.lat[i] = pct["50"]
		} else {
			res.lat[i] = pct["99"]
		}
	}
	return res, nil
}
