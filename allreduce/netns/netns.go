// Package netns builds a throwaway network for bandwidth experiments: one
// network namespace per member, each joined by a veth pair to a bridge in a
// hub namespace, with every member's egress shaped by tc (tbf for the rate,
// netem for delay). The addresses are private and exist only inside these
// namespaces; Close deletes them all. It needs root and iproute2.
package netns

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// Lab is a set of namespaces joined by a bridge.
type Lab struct {
	NS    []string // member namespaces
	Addrs []string // each member's IPv4 address
	hub   string
}

// Check reports why labs cannot be built here, or nil.
func Check() error {
	if os.Geteuid() != 0 {
		return errors.New("network namespaces and tc need root; run as root or drop --link-rate")
	}
	for _, tool := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (install iproute2): %w", tool, err)
		}
	}
	return nil
}

var rateRE = regexp.MustCompile(`^([0-9]+(?:\.[0-9]+)?)([kmg]?)bit$`)

// ParseRate converts a tc rate such as "1gbit" or "100mbit" to bits/s.
func ParseRate(s string) (float64, error) {
	m := rateRE.FindStringSubmatch(strings.ToLower(s))
	if m == nil {
		return 0, fmt.Errorf("rate %q: want a number and kbit, mbit, gbit or bit (e.g. 1gbit)", s)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("rate %q: not a positive number", s)
	}
	mult := map[string]float64{"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
	return v * mult, nil
}

var delayRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?(us|ms|s)$`)

// Setup creates n members named after prefix (which should be unique, e.g.
// contain the process id), shaped to rate (a tc rate) and, if delay is not
// empty, delayed by delay (a tc time such as "0.2ms"). On error everything
// created is removed.
func Setup(prefix string, n int, rate, delay string) (*Lab, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	bps, err := ParseRate(rate)
	if err != nil {
		return nil, err
	}
	if delay != "" && !delayRE.MatchString(delay) {
		return nil, fmt.Errorf("delay %q: want a number and us, ms or s (e.g. 0.2ms)", delay)
	}
	if n < 1 || n > 250 {
		return nil, fmt.Errorf("%d members (want 1 to 250)", n)
	}
	l := &Lab{hub: prefix + "-hub"}
	ok := false
	defer func() {
		if !ok {
			l.Close()
		}
	}()
	if err := run("ip", "netns", "add", l.hub); err != nil {
		return nil, err
	}
	steps := [][]string{
		{"ip", "-n", l.hub, "link", "add", "br0", "type", "bridge"},
		{"ip", "-n", l.hub, "link", "set", "br0", "up"},
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return nil, err
		}
	}
	// tbf needs a bucket of at least one GSO packet (64 KiB); 2 ms of
	// traffic keeps the shaper from starving fast links.
	burst := max(int(bps/8*0.002), 256<<10)
	for i := range n {
		ns := fmt.Sprintf("%s-%d", prefix, i)
		if err := run("ip", "netns", "add", ns); err != nil {
			return nil, err
		}
		l.NS = append(l.NS, ns)
		addr := fmt.Sprintf("10.231.0.%d", i+1)
		l.Addrs = append(l.Addrs, addr)
		port := fmt.Sprintf("m%d", i)
		shape := []string{"ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", "eth0", "root"}
		if delay != "" {
			shape = append(shape, "netem", "delay", delay, "rate", rate, "limit", "100000")
		} else {
			shape = append(shape, "tbf", "rate", rate, "burst", strconv.Itoa(burst), "latency", "50ms")
		}
		for _, s := range [][]string{
			{"ip", "-n", l.hub, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"ip", "-n", l.hub, "link", "set", port, "master", "br0"},
			{"ip", "-n", l.hub, "link", "set", port, "up"},
			{"ip", "-n", ns, "addr", "add", addr + "/24", "dev", "eth0"},
			{"ip", "-n", ns, "link", "set", "eth0", "up"},
			{"ip", "-n", ns, "link", "set", "lo", "up"},
			shape,
		} {
			if err := run(s...); err != nil {
				if delay != "" && strings.Contains(err.Error(), "qdisc kind is unknown") {
					return nil, fmt.Errorf("this kernel has no netem qdisc, so --delay cannot be applied: %w", err)
				}
				return nil, err
			}
		}
	}
	ok = true
	return l, nil
}

// Command returns a command that runs inside member i's namespace.
func (l *Lab) Command(i int, name string, args ...string) *exec.Cmd {
	return exec.Command("ip", append([]string{"netns", "exec", l.NS[i], name}, args...)...)
}

// SetLink takes member i's link to the bridge down (cutting it off from
// every other member) or up again.
func (l *Lab) SetLink(i int, up bool) error {
	state := "down"
	if up {
		state = "up"
	}
	return run("ip", "-n", l.hub, "link", "set", fmt.Sprintf("m%d", i), state)
}

// Close deletes every namespace (and with them the veths and the bridge).
func (l *Lab) Close() error {
	var errs []error
	for _, ns := range append(l.NS, l.hub) {
		if err := run("ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
		}
	}
	l.NS = nil
	return errors.Join(errs...)
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
