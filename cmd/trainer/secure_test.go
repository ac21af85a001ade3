package main

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/k8s"
)

// parsedRunFlags returns the flags of `trainer join` after parsing args.
func parsedRunFlags(t *testing.T, args ...string) *runFlags {
	t.Helper()
	f := &runFlags{}
	fs := pflag.NewFlagSet("join", pflag.ContinueOnError)
	f.register(fs, true)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestSecureAddrs: the address flags default to 127.0.0.1 without a key and
// to every interface with one; a non-loopback address without a key is
// refused, naming the flag and what to do; --insecure allows it with one
// warning.
func TestSecureAddrs(t *testing.T) {
	key, err := cluster.NewSecurity([]byte("the-cluster-secret-0123"), cluster.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name     string
		args     []string
		sec      *cluster.Security
		host     string // of the defaulted addresses; "" when refused
		refused  string // flag named in the refusal
		warnings int
	}{
		{"defaults without a key", nil, nil, "127.0.0.1", "", 0},
		{"defaults with a key", nil, key, "0.0.0.0", "", 0},
		{"explicit bind without a key", []string{"--bind", "0.0.0.0:7946"}, nil, "", "--bind", 0},
		{"explicit gRPC without a key", []string{"--grpc", "10.0.0.2:7947"}, nil, "", "--grpc", 0},
		{"explicit metrics without a key", []string{"--metrics-addr", "0.0.0.0:9090"}, nil, "", "--metrics-addr", 0},
		{"advertise beyond loopback without a key", []string{"--advertise", "10.0.0.2:7946"}, nil, "", "--advertise", 0},
		{"a seed on another machine without a key", []string{"--seed", "10.0.0.1:7946"}, nil, "", "member 10.0.0.1:7946", 0},
		{"a seed on this machine", []string{"--seed", "127.0.0.1:7946"}, nil, "127.0.0.1", "", 0},
		{"a seed on another machine with a key", []string{"--seed", "10.0.0.1:7946"}, key, "0.0.0.0", "", 0},
		{"insecure", []string{"--insecure", "--bind", "0.0.0.0:7946"}, nil, "0.0.0.0", "", 1},
		{"insecure defaults", []string{"--insecure"}, nil, "0.0.0.0", "", 1},
		{"loopback needs no key", []string{"--bind", "127.0.0.1:7946", "--grpc", "127.0.0.1:7947", "--metrics-addr", "localhost:9090"}, nil, "", "", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := parsedRunFlags(t, tc.args...)
			var logs bytes.Buffer
			err := f.secureAddrs(tc.sec, slog.New(slog.NewTextHandler(&logs, nil)))
			if tc.refused != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refused) || !strings.Contains(err.Error(), cluster.EnvKey) ||
					!strings.Contains(err.Error(), "--cluster-key-file") || !strings.Contains(err.Error(), "--insecure") {
					t.Fatalf("got %v, want a refusal naming %s, %s, --cluster-key-file and --insecure", err, tc.refused, cluster.EnvKey)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(logs.String(), "level=WARN"); n != tc.warnings {
				t.Errorf("%d warnings, want %d:\n%s", n, tc.warnings, logs.String())
			}
			if tc.host == "" {
				return
			}
			for _, a := range []string{f.bind, f.grpcAddr, f.metricsAddr} {
				if h, _, _ := net.SplitHostPort(a); h != tc.host && !strings.Contains(strings.Join(tc.args, " "), a) {
					t.Errorf("address %s, want host %s", a, tc.host)
				}
			}
		})
	}
}

// testProc is a trainer process started by a test.
type testProc struct {
	cmd  *exec.Cmd
	mu   sync.Mutex
	logs strings.Builder
	done chan struct{}
}

func (p *testProc) output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.logs.String()
}

// startTrainer runs the trainer with args and env; it is stopped (SIGTERM,
// then SIGKILL) when the test ends.
func startTrainer(t *testing.T, env []string, args ...string) *testProc {
	t.Helper()
	p := &testProc{cmd: exec.Command(trainerBin(t), args...), done: make(chan struct{})}
	p.cmd.Env = append(os.Environ(), env...)
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	p.cmd.Stdout = nil
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.logs.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
		}
		p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(20 * time.Second):
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

// waitLog waits until the process logged want.
func (p *testProc) waitLog(t *testing.T, want string, d time.Duration) {
	t.Helper()
	for deadline := time.Now().Add(d); !strings.Contains(p.output(), want); time.Sleep(50 * time.Millisecond) {
		select {
		case <-p.done:
			t.Fatalf("trainer exited before logging %q:\n%s", want, p.output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no %q after %s:\n%s", want, d, p.output())
		}
	}
}

// tinyData prepares a small byte-level dataset with the trainer.
func tinyData(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	in := filepath.Join(dir, "in.txt")
	var sb strings.Builder
	for i := 0; sb.Len() < 64<<10; i++ {
		fmt.Fprintf(&sb, "line %d: the quick brown fox jumps over the lazy dog.\n", i)
	}
	if err := os.WriteFile(in, []byte(sb.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "data")
	cmd := exec.Command(trainerBin(t), "prepare", "--input", in, "--out", out, "--seq-len", "32", "--val-fraction", "0", "--progress=false")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("prepare: %v\n%s", err, b)
	}
	return out
}

// tinyRun is a long, small training run that a test stops.
func tinyRun(data, runDir string) []string {
	return []string{"train", "--data", data, "--run-dir", runDir, "--layers", "1", "--dim", "16", "--heads", "1",
		"--batch", "2", "--steps", "1000000", "--checkpoint-every", "0", "--device", "cpu", "--threads", "1",
		"--progress", "none", "--log-every", "1000000"}
}

// socket is a listening TCP socket or a bound UDP socket of a process.
type socket struct {
	proto string
	ip    net.IP
	port  int
}

// listeners returns the TCP sockets in LISTEN state and the bound UDP
// sockets that process pid holds, from /proc.
func listeners(t *testing.T, pid int) []socket {
	t.Helper()
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		t.Fatal(err)
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var out []socket
	for _, proto := range []string{"tcp", "tcp6", "udp", "udp6"} {
		raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/net/%s", pid, proto))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(raw), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 10 || !inodes[f[9]] {
				continue
			}
			if strings.HasPrefix(proto, "tcp") && f[3] != "0A" { // LISTEN
				continue
			}
			out = append(out, parseProcAddr(t, proto, f[1]))
		}
	}
	return out
}

// parseProcAddr decodes /proc/net's "HEXIP:HEXPORT" (the IP in host byte
// order, 32-bit words).
func parseProcAddr(t *testing.T, proto, s string) socket {
	t.Helper()
	ipHex, portHex, _ := strings.Cut(s, ":")
	b, err := hex.DecodeString(ipHex)
	port, err2 := strconv.ParseInt(portHex, 16, 32)
	if err != nil || err2 != nil || len(b)%4 != 0 {
		t.Fatalf("bad /proc address %q", s)
	}
	for i := 0; i < len(b); i += 4 { // little-endian words
		b[i], b[i+1], b[i+2], b[i+3] = b[i+3], b[i+2], b[i+1], b[i]
	}
	return socket{proto: proto, ip: net.IP(b), port: int(port)}
}

// TestNodeListensOnLoopbackWithoutKey: a node started without a cluster key
// and without address flags' hosts binds gossip (TCP and UDP), gRPC and
// metrics on 127.0.0.1 only, as the kernel reports its sockets.
func TestNodeListensOnLoopbackWithoutKey(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the trainer")
	}
	if _, err := os.Stat("/proc/self/net/tcp"); err != nil {
		t.Skip("needs /proc/PID/net")
	}
	data := tinyData(t)
	args := append(tinyRun(data, filepath.Join(t.TempDir(), "run")), "--bind", ":0", "--grpc", ":0", "--metrics-addr", ":0")
	p := startTrainer(t, []string{cluster.EnvKey + "="}, args...)
	p.waitLog(t, "node ready", 60*time.Second)
	socks := listeners(t, p.cmd.Process.Pid)
	tcp, udp := 0, 0
	for _, s := range socks {
		if !s.ip.IsLoopback() {
			t.Errorf("%s socket on %s:%d without a cluster key", s.proto, s.ip, s.port)
		}
		if strings.HasPrefix(s.proto, "tcp") {
			tcp++
		} else {
			udp++
		}
	}
	if tcp < 3 || udp < 1 {
		t.Errorf("%d TCP listeners and %d UDP sockets, want gossip, gRPC and metrics on TCP and gossip on UDP: %v", tcp, udp, socks)
	}
	for _, line := range strings.Split(p.output(), "\n") {
		if strings.Contains(line, "level=WARN") && (strings.Contains(line, "key") || strings.Contains(line, "secret")) {
			t.Errorf("warning about the key on loopback: %s", line)
		}
	}
}

// TestExposedBindRefused: without a key, an explicit non-loopback address
// is refused before anything is bound (the run directory, made before the
// first listener, is never created), with an error that says what to set.
func TestExposedBindRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the trainer")
	}
	data := tinyData(t)
	for _, flag := range []string{"--bind", "--grpc", "--metrics-addr"} {
		run := filepath.Join(t.TempDir(), "run")
		args := append(tinyRun(data, run), "--bind", "127.0.0.1:0", "--grpc", "127.0.0.1:0", "--metrics-addr", "127.0.0.1:0", flag, "0.0.0.0:0")
		cmd := exec.Command(trainerBin(t), args...)
		cmd.Env = append(os.Environ(), cluster.EnvKey+"=")
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("%s 0.0.0.0:0 without a key: trainer ran\n%s", flag, out)
		}
		for _, want := range []string{flag + " 0.0.0.0:0", cluster.EnvKey, "--cluster-key-file", "--insecure"} {
			if !bytes.Contains(out, []byte(want)) {
				t.Errorf("%s: output does not say %q:\n%s", flag, want, out)
			}
		}
		if _, err := os.Stat(run); !os.IsNotExist(err) {
			t.Errorf("%s: run directory exists (%v): the node started before the refusal", flag, err)
		}
	}
}

// TestStatusNeedsKey: `trainer status` on a cluster with a key fails
// without it, saying to set the key, and works with it.
func TestStatusNeedsKey(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the trainer")
	}
	const key = "status-test-cluster-key-0123"
	data := tinyData(t)
	gossip, grpcAddr := freeLoopback(t), freeLoopback(t)
	args := append(tinyRun(data, filepath.Join(t.TempDir(), "run")), "--bind", gossip, "--grpc", grpcAddr, "--metrics-addr", "")
	p := startTrainer(t, []string{cluster.EnvKey + "=" + key}, args...)
	p.waitLog(t, "node ready", 60*time.Second)

	status := func(withKey bool, args ...string) (string, error) {
		cmd := exec.Command(trainerBin(t), append([]string{"status", "--timeout", "5s"}, args...)...)
		env := cluster.EnvKey + "="
		if withKey {
			env += key
		}
		cmd.Env = append(os.Environ(), env)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	for _, by := range [][]string{{"--addr", grpcAddr}, {"--seed", gossip}} {
		out, err := status(false, by...)
		if err == nil || !strings.Contains(out, cluster.EnvKey) {
			t.Errorf("status %v without the key: %v, want a failure that names %s:\n%s", by, err, cluster.EnvKey, out)
		}
		out, err = status(true, by...)
		if err != nil || !strings.Contains(out, "NAME") {
			t.Errorf("status %v with the key: %v\n%s", by, err, out)
		}
		if strings.Contains(out, data) {
			t.Errorf("status %v shows the data path %s:\n%s", by, data, out)
		}
	}
}

// freeLoopback returns 127.0.0.1:PORT with a port free for TCP and UDP.
func freeLoopback(t *testing.T) string {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		l.Close()
		if err == nil {
			u.Close()
			return addr
		}
	}
	t.Fatal("no port free for TCP and UDP")
	return ""
}

// TestManifestsListenWithKey: the Kubernetes pods listen on 0.0.0.0 (they
// must be reachable on the pod IP), which works because they get the
// cluster key from a Secret; without it the same command lines are refused.
func TestManifestsListenWithKey(t *testing.T) {
	key, err := cluster.NewSecurity([]byte("secret-from-difftrain-cluster-key"), cluster.TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range k8s.Kustomizations {
		o, err := k8s.Render(filepath.Join(k8s.Dir(), k))
		if err != nil {
			t.Fatal(err)
		}
		c := container(t, o.Job("difftrain"), "trainer")
		runs := 0
		for _, index := range []string{"0", "1"} {
			for _, cl := range runScript(t, c, map[string]string{"JOB_COMPLETION_INDEX": index}, "FAIL") {
				if cl.sub != "train" && cl.sub != "join" {
					continue
				}
				runs++
				for _, sec := range []*cluster.Security{key, nil} {
					f := &runFlags{}
					fs := pflag.NewFlagSet(cl.sub, pflag.ContinueOnError)
					fs.ParseErrorsAllowlist.UnknownFlags = true
					f.register(fs, cl.sub == "join")
					if err := fs.Parse(cl.args); err != nil {
						t.Fatalf("%s: %s %v: %v", k, cl.sub, cl.args, err)
					}
					var logs bytes.Buffer
					err := f.secureAddrs(sec, slog.New(slog.NewTextHandler(&logs, nil)))
					if sec != nil && (err != nil || logs.Len() > 0) {
						t.Errorf("%s: pod %s `trainer %s` with the key: %v %s", k, index, cl.sub, err, logs.String())
					}
					if sec == nil && err == nil {
						t.Errorf("%s: pod %s `trainer %s` without the key listens on %s unprotected", k, index, cl.sub, f.bind)
					}
				}
			}
		}
		if runs < 2 {
			t.Errorf("%s: %d train/join calls checked, want pod 0's and pod 1's", k, runs)
		}
	}
}
