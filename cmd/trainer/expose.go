package main

import (
	"log/slog"
	"net"

	"github.com/difftrain/difftrain/cluster"
)

// secureAddrs gives --bind, --grpc and --metrics-addr without a host the
// default one (cluster.DefaultHost: every interface with a cluster key or
// --insecure, 127.0.0.1 otherwise), then refuses addresses that other
// machines could reach without protection, and seeds on other machines,
// unless --insecure, which warns once. It runs before anything is bound.
func (f *runFlags) secureAddrs(sec *cluster.Security, log *slog.Logger) error {
	host := cluster.DefaultHost(sec, f.security.Insecure)
	for _, a := range []*string{&f.bind, &f.grpcAddr, &f.metricsAddr} {
		if h, p, err := net.SplitHostPort(*a); err == nil && h == "" {
			*a = net.JoinHostPort(host, p)
		}
	}
	ls := []cluster.Listener{
		{Flag: "--bind", Addr: f.bind, Gossip: true},
		{Flag: "--advertise", Addr: f.advertise, Gossip: true},
		{Flag: "--grpc", Addr: f.grpcAddr},
		{Flag: "--grpc-advertise", Addr: f.grpcAdvertise},
		{Flag: "--metrics-addr", Addr: f.metricsAddr},
	}
	// A member on another machine (join --seed, train --peer) can only be
	// reached by a node that listens beyond loopback.
	for _, s := range f.seeds {
		ls = append(ls, cluster.Listener{Flag: "member", Addr: s, Gossip: true})
	}
	return cluster.CheckExposure(ls, sec, f.security.Insecure, log)
}
