package cluster

import (
	"github.com/spf13/pflag"
)

// SecurityFlags are the command-line flags that configure Security, shared
// by every subcommand that talks to a cluster (train, join, status).
type SecurityFlags struct {
	Key, KeyFile              string
	Cert, CertKey, CA, Server string
	// Insecure allows listening beyond loopback without a cluster key
	// (CheckExposure); without it such addresses are refused.
	Insecure bool
}

// Register adds the flags to fs.
func (f *SecurityFlags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.Key, "cluster-key", "", "cluster secret (prefer $"+EnvKey+" or --cluster-key-file: flags show in ps)")
	fs.StringVar(&f.KeyFile, "cluster-key-file", "", "file holding the cluster secret")
	fs.StringVar(&f.Cert, "tls-cert", "", "PEM certificate for mutual TLS between nodes")
	fs.StringVar(&f.CertKey, "tls-key", "", "PEM private key of --tls-cert")
	fs.StringVar(&f.CA, "tls-ca", "", "PEM CA certificate that signed every node's certificate")
	fs.StringVar(&f.Server, "tls-server-name", "", "name to check in peer certificates (default: any certificate signed by --tls-ca)")
	fs.BoolVar(&f.Insecure, "insecure", false, "allow listening beyond 127.0.0.1 without a cluster key: gossip readable, RPCs unauthenticated (warns once)")
}

// Load returns the Security the flags describe, or nil when neither a
// secret nor certificates are given.
func (f *SecurityFlags) Load() (*Security, error) {
	secret, err := LoadSecret(f.Key, f.KeyFile)
	if err != nil {
		return nil, err
	}
	files := TLSFiles{Cert: f.Cert, Key: f.CertKey, CA: f.CA, ServerName: f.Server}
	if secret == nil && !files.set() {
		return nil, nil
	}
	return NewSecurity(secret, files)
}
