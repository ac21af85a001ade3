package cluster

import (
	"bytes"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"
)

// EnvKey is the environment variable that may carry the cluster secret.
const EnvKey = "DIFFTRAIN_CLUSTER_KEY"

// minSecret is the shortest cluster secret accepted.
const minSecret = 16

// LoadSecret returns the cluster secret from, in order: value (a flag), the
// DIFFTRAIN_CLUSTER_KEY environment variable, or the file named by file
// (trailing newlines trimmed). It returns nil and no error when none is set.
func LoadSecret(value, file string) ([]byte, error) {
	var s []byte
	var from string
	switch {
	case value != "":
		s, from = []byte(value), "flag"
	case os.Getenv(EnvKey) != "":
		s, from = []byte(os.Getenv(EnvKey)), EnvKey
	case file != "":
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("cluster key file: %w", err)
		}
		s, from = bytes.TrimRight(b, "\r\n"), "file "+file
	default:
		return nil, nil
	}
	if len(s) < minSecret {
		return nil, fmt.Errorf("cluster key from %s: %d bytes, need at least %d", from, len(s), minSecret)
	}
	return s, nil
}

// TLSFiles names PEM files for mutual TLS between nodes. Either all of Cert,
// Key and CA are set, or none.
type TLSFiles struct {
	Cert, Key, CA string
	// ServerName, when set, is checked against the peer certificate's names.
	// When empty any certificate signed by CA is accepted: pod addresses
	// change, and the CA is private to the cluster.
	ServerName string
}

func (f TLSFiles) set() bool { return f.Cert != "" || f.Key != "" || f.CA != "" }

// Security protects a cluster: the secret encrypts gossip (memberlist's
// keyring, AES-GCM with a key derived by HKDF-SHA256) and authenticates every
// gRPC call with an HMAC token; certificates, when given, add mutual TLS.
// A nil *Security means no protection at all.
type Security struct {
	gossipKey []byte // 32 bytes, AES-256 for memberlist
	authKey   []byte // HMAC-SHA256 key for call tokens
	server    *tls.Config
	client    *tls.Config
	window    time.Duration // accepted clock difference for call tokens

	mu     sync.Mutex
	nonces map[[nonceLen]byte]time.Time // seen nonces until they leave the window
	swept  time.Time
}

// NewSecurity derives the keys from secret (which may be nil when TLS files
// are given) and loads the certificates. Both nil and no files is an error:
// use a nil *Security for an unprotected cluster.
func NewSecurity(secret []byte, files TLSFiles) (*Security, error) {
	if secret == nil && !files.set() {
		return nil, errors.New("security: need a cluster key or TLS files")
	}
	s := &Security{window: time.Minute, nonces: map[[nonceLen]byte]time.Time{}}
	if secret != nil {
		if len(secret) < minSecret {
			return nil, fmt.Errorf("security: cluster key of %d bytes, need at least %d", len(secret), minSecret)
		}
		var err error
		if s.gossipKey, err = hkdf.Key(sha256.New, secret, nil, "difftrain gossip v1", 32); err != nil {
			return nil, fmt.Errorf("security: derive gossip key: %w", err)
		}
		if s.authKey, err = hkdf.Key(sha256.New, secret, nil, "difftrain rpc auth v1", 32); err != nil {
			return nil, fmt.Errorf("security: derive auth key: %w", err)
		}
	}
	if files.set() {
		if err := s.loadTLS(files); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// GossipKey returns the 32-byte memberlist key, or nil without a secret.
func (s *Security) GossipKey() []byte {
	if s == nil {
		return nil
	}
	return s.gossipKey
}

func (s *Security) loadTLS(f TLSFiles) error {
	if f.Cert == "" || f.Key == "" || f.CA == "" {
		return errors.New("security: --tls-cert, --tls-key and --tls-ca go together")
	}
	cert, err := tls.LoadX509KeyPair(f.Cert, f.Key)
	if err != nil {
		return fmt.Errorf("security: load %s and %s: %w", f.Cert, f.Key, err)
	}
	pem, err := os.ReadFile(f.CA)
	if err != nil {
		return fmt.Errorf("security: read CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return fmt.Errorf("security: %s: no PEM certificate", f.CA)
	}
	s.server = &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		MinVersion:   tls.VersionTLS13,
	}
	s.client = &tls.Config{
		Certificates: []tls.Certificate{cert},
		RootCAs:      pool,
		ServerName:   f.ServerName,
		MinVersion:   tls.VersionTLS13,
	}
	if f.ServerName == "" {
		// Verify the chain against the cluster CA but not the host name.
		s.client.InsecureSkipVerify = true
		s.client.VerifyConnection = func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("peer sent no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{
				Roots:         pool,
				Intermediates: inter,
				KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			return err
		}
	}
	return nil
}

// Listener is an address a node listens on, announces to peers or joins
// (a seed), named by the flag that set it, for CheckExposure.
type Listener struct {
	Flag   string // e.g. "--bind", for messages
	Addr   string // host:port; empty: not used. An empty host is every interface.
	Gossip bool   // gossip: only the cluster key protects it, TLS does not
}

// Loopback reports whether host, an IP address or "localhost", reaches only
// this machine. Other names count as reaching beyond it.
func Loopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// DefaultHost is where a node listens when an address gives no host: every
// interface with a cluster key (or when the operator chose insecure), and
// loopback only otherwise.
func DefaultHost(sec *Security, insecure bool) string {
	if sec.GossipKey() != nil || insecure {
		return "0.0.0.0"
	}
	return "127.0.0.1"
}

// unprotected returns the listeners of ls that reach beyond this machine
// without what protects them: the cluster key for gossip, a key or mutual
// TLS for gRPC and HTTP.
func unprotected(ls []Listener, sec *Security) []Listener {
	var out []Listener
	for _, l := range ls {
		if l.Addr == "" {
			continue
		}
		host, _, err := net.SplitHostPort(l.Addr)
		if err != nil {
			host = l.Addr
		}
		if Loopback(host) || sec.GossipKey() != nil || (sec != nil && !l.Gossip) {
			continue
		}
		out = append(out, l)
	}
	return out
}

func describe(ls []Listener) string {
	var b strings.Builder
	for i, l := range ls {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %s", l.Flag, l.Addr)
	}
	return b.String()
}

// CheckExposure refuses, before anything is bound, to listen beyond this
// machine without protection: gossip needs the cluster key (TLS does not
// cover it), gRPC and HTTP a key or mutual TLS. With insecure it allows
// them and logs one warning to log (nil: slog's default) naming them.
func CheckExposure(ls []Listener, sec *Security, insecure bool, log *slog.Logger) error {
	bad := unprotected(ls, sec)
	if len(bad) == 0 {
		return nil
	}
	if !insecure {
		why := "without a cluster key"
		if sec != nil {
			why = "with TLS but no cluster key (gossip is encrypted only by the key)"
		}
		return fmt.Errorf("%s: beyond this machine %s: set %s or --cluster-key-file on every node, or pass --insecure to run unprotected",
			describe(bad), why, EnvKey)
	}
	if log == nil {
		log = slog.Default()
	}
	log.Warn("--insecure: listening beyond this machine without a cluster key; anyone who reaches these ports can read the gossip, join the ring and call every RPC",
		"addrs", describe(bad))
	return nil
}
