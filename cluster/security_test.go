package cluster

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func mustSecurity(t *testing.T, secret string) *Security {
	t.Helper()
	s, err := NewSecurity([]byte(secret), TLSFiles{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLoadSecret(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "key")
	if err := os.WriteFile(file, []byte("from-the-file-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, flag, env, file, want, err string
	}{
		{name: "none"},
		{name: "flag wins", flag: "from-the-flag-0123456789", env: "from-the-env-0123456789", file: file, want: "from-the-flag-0123456789"},
		{name: "env before file", env: "from-the-env-0123456789", file: file, want: "from-the-env-0123456789"},
		{name: "file trimmed", file: file, want: "from-the-file-0123456789"},
		{name: "too short", flag: "short", err: "at least"},
		{name: "missing file", file: filepath.Join(dir, "nope"), err: "key file"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(EnvKey, tc.env)
			got, err := LoadSecret(tc.flag, tc.file)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("got %q, %v; want error with %q", got, err, tc.err)
				}
				return
			}
			if err != nil || string(got) != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestTokenVerify(t *testing.T) {
	sec := mustSecurity(t, "the-cluster-secret-0123")
	other := mustSecurity(t, "another-secret-abcdefgh")
	now := time.Now()
	incoming := func(tok []byte) metadata.MD {
		if tok == nil {
			return nil
		}
		return metadata.Pairs(authHeader, string(tok))
	}
	tok := func(s *Security, method string, at time.Time) []byte {
		b, err := s.token(method, at)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	good := tok(sec, methodStatus, now)
	flipped := bytes.Clone(good)
	flipped[len(flipped)-1] ^= 1
	tests := []struct {
		name string
		tok  []byte
		want string // "" means accepted
	}{
		{"valid", good, ""},
		{"replayed", good, "replayed"},
		{"missing", nil, "0 auth tokens"},
		{"short", good[:20], "bytes"},
		{"wrong secret", tok(other, methodStatus, now), "signature"},
		{"other method", tok(sec, methodPropose, now), "signature"},
		{"flipped bit", flipped, "signature"},
		{"stale", tok(sec, methodStatus, now.Add(-2*time.Minute)), "away"},
		{"future", tok(sec, methodStatus, now.Add(2*time.Minute)), "away"},
	}
	for _, tc := range tests {
		err := sec.verify(incoming(tc.tok), methodStatus, now)
		if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: got %v, want %q", tc.name, err, tc.want)
		}
	}
}

// serveControl runs a bare control service of a fresh member on 127.0.0.1.
func serveControl(t *testing.T, sec *Security) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Name: "srv", BindAddr: "127.0.0.1", BindPort: 0, GRPCAddr: lis.Addr().String(),
		Security: sec, Timing: FastTiming(), Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(ServerOptions(sec)...)
	c.Register(srv)
	go srv.Serve(lis)
	t.Cleanup(func() { srv.Stop(); c.shutdown() })
	return lis.Addr().String()
}

// captureLog collects slog's default output while a test runs.
type captureLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (c *captureLog) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.Write(p)
}

func (c *captureLog) String() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.buf.String()
}

func TestRPCAuthentication(t *testing.T) {
	sec := mustSecurity(t, "the-cluster-secret-0123")
	addr := serveControl(t, sec)
	logs := &captureLog{}
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(logs, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if s, err := QueryStatus(ctx, addr, sec); err != nil || !strings.HasPrefix(s.Self, "srv-") {
		t.Fatalf("with the secret: %+v, %v", s, err)
	}
	for name, s := range map[string]*Security{
		"no token":     nil,
		"wrong secret": mustSecurity(t, "not-the-cluster-secret"),
	} {
		_, err := QueryStatus(ctx, addr, s)
		if status.Code(errors.Unwrap(err)) != codes.Unauthenticated && !strings.Contains(err.Error(), "Unauthenticated") {
			t.Errorf("%s: got %v, want Unauthenticated", name, err)
		}
	}
	if out := logs.String(); strings.Count(out, "refused unauthenticated call") != 2 || !strings.Contains(out, "peer=127.0.0.1:") {
		t.Errorf("refusals not logged with the peer address:\n%s", out)
	}
}

// rawCodec sends arbitrary bytes under the control service's codec name.
type rawCodec struct{}

func (rawCodec) Name() string { return codecName }
func (rawCodec) Marshal(v any) ([]byte, error) {
	return *(v.(*[]byte)), nil
}
func (rawCodec) Unmarshal(b []byte, v any) error {
	*(v.(*[]byte)) = bytes.Clone(b)
	return nil
}

func TestMalformedControlMessagesRefused(t *testing.T) {
	sec := mustSecurity(t, "the-cluster-secret-0123")
	addr := serveControl(t, sec)
	cc, err := grpc.NewClient(addr, DialOptions(sec)...)
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	valid := (&reply{OK: true}).marshal() // valid bytes, wrong kind for every method
	for _, method := range []string{methodPropose, methodCommit, methodAbort, methodReport, methodStatus} {
		for _, body := range [][]byte{nil, {0xff}, valid, bytes.Repeat([]byte{0xff}, 4096)} {
			var resp []byte
			err := cc.Invoke(ctx, method, &body, &resp, grpc.ForceCodec(rawCodec{}))
			// gRPC reports a request that fails to decode as Internal.
			if c := status.Code(err); c != codes.Internal && c != codes.InvalidArgument || !strings.Contains(err.Error(), "want") && !strings.Contains(err.Error(), "truncated") && !strings.Contains(err.Error(), "version") {
				t.Errorf("%s with %d bytes: got %v, want a decode error", method, len(body), err)
			}
		}
	}
	// The member still serves.
	if _, err := QueryStatus(ctx, addr, sec); err != nil {
		t.Fatalf("after malformed messages: %v", err)
	}
}

func TestJoinWithoutSecretRefused(t *testing.T) {
	sec := mustSecurity(t, "the-cluster-secret-0123")
	h := newHarness(t, sec)
	a := h.start("a", nil)
	for name, s := range map[string]*Security{
		"no secret":    nil,
		"wrong secret": mustSecurity(t, "not-the-cluster-secret"),
	} {
		t.Run(name, func(t *testing.T) {
			c, err := New(Config{Name: "intruder", BindAddr: "127.0.0.1", GRPCAddr: "127.0.0.1:1",
				Seeds: []string{a.c.GossipAddr()}, JoinTimeout: 500 * time.Millisecond,
				Security: s, Timing: FastTiming(), Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.shutdown()
			if err := c.Join(context.Background()); err == nil {
				t.Fatal("join without the secret succeeded")
			}
			if n := len(c.Members()); n != 1 {
				t.Errorf("intruder sees %d members", n)
			}
			if n := len(a.c.Members()); n != 1 {
				t.Errorf("cluster sees %d members", n)
			}
		})
	}
}

// writeCert writes a PEM certificate and key signed by ca (self-signed when
// ca is nil) and returns the certificate and key.
func writeCert(t *testing.T, dir, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	parent, signer := tmpl, key
	if ca == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
	} else {
		parent, signer = ca, caKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	write := func(file, kind string, b []byte) {
		if err := os.WriteFile(filepath.Join(dir, file), pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: b}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(name+".crt", "CERTIFICATE", der)
	write(name+".key", "EC PRIVATE KEY", kb)
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert, key
}

func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	ca, caKey := writeCert(t, dir, "ca", nil, nil)
	writeCert(t, dir, "node", ca, caKey)
	rogueCA, rogueKey := writeCert(t, dir, "rogue-ca", nil, nil)
	writeCert(t, dir, "rogue", rogueCA, rogueKey)
	files := func(name, caName string) TLSFiles {
		return TLSFiles{Cert: filepath.Join(dir, name+".crt"), Key: filepath.Join(dir, name+".key"), CA: filepath.Join(dir, caName+".crt")}
	}
	sec, err := NewSecurity(nil, files("node", "ca"))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveControl(t, sec)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := QueryStatus(ctx, addr, sec); err != nil {
		t.Fatalf("with a certificate from the cluster CA: %v", err)
	}
	rogue, err := NewSecurity(nil, files("rogue", "ca"))
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Security{"plaintext": nil, "foreign CA": rogue} {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		if _, err := QueryStatus(ctx, addr, s); err == nil {
			t.Errorf("%s client was served", name)
		}
		cancel()
	}
	if _, err := NewSecurity(nil, TLSFiles{Cert: files("node", "ca").Cert}); err == nil {
		t.Error("certificate without key and CA accepted")
	}
}
