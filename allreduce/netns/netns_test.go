package netns

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

func TestParseRate(t *testing.T) {
	cases := []struct {
		in   string
		want float64
		ok   bool
	}{
		{"1gbit", 1e9, true},
		{"10Gbit", 1e10, true},
		{"100mbit", 1e8, true},
		{"2.5gbit", 2.5e9, true},
		{"800kbit", 8e5, true},
		{"1gb", 0, false},
		{"fast", 0, false},
		{"0gbit", 0, false},
		{"-1gbit", 0, false},
	}
	for _, c := range cases {
		got, err := ParseRate(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseRate(%q) = %v, %v; want %v (ok %v)", c.in, got, err, c.want, c.ok)
		}
	}
}

// TestLab builds two shaped members, checks that member 0 has its address
// and that Close removes every namespace. It needs root.
func TestLab(t *testing.T) {
	if err := Check(); err != nil {
		t.Skip(err)
	}
	prefix := fmt.Sprintf("dtartest%d", os.Getpid())
	lab, err := Setup(prefix, 2, "100mbit", "")
	if err != nil && strings.Contains(err.Error(), "netns add") {
		t.Skipf("cannot create network namespaces here: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	out, err := lab.Command(0, "ip", "-4", "addr", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), lab.Addrs[0]+"/24") {
		t.Errorf("member 0 has no address %s: %v\n%s", lab.Addrs[0], err, out)
	}
	out, err = lab.Command(1, "tc", "qdisc", "show", "dev", "eth0").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "tbf") {
		t.Errorf("member 1 is not shaped: %v\n%s", err, out)
	}
	if err := lab.Close(); err != nil {
		t.Fatal(err)
	}
	list, _ := exec.Command("ip", "netns", "list").CombinedOutput()
	if strings.Contains(string(list), prefix) {
		t.Errorf("namespaces left behind:\n%s", list)
	}
	if _, err := Setup(prefix, 2, "1gbit", "soon"); err == nil {
		t.Error("Setup accepted delay \"soon\"")
	}
}
