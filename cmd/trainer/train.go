package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/difftrain/difftrain/cluster"
	"github.com/difftrain/difftrain/compute/device"
	"github.com/difftrain/difftrain/dataset"
	"github.com/difftrain/difftrain/node"
)

func init() {
	tf := &runFlags{}
	trainCmd := &cobra.Command{
		Use:   "train",
		Short: "Start a training run: the seed node of a cluster (others add themselves with `trainer join`)",
		Long: `train starts a node that brings the run's configuration: it resumes from the newest valid
checkpoint in --checkpoint-dir (--resume auto), opens the dataset, and trains. Other
machines join with ` + "`trainer join --seed HOST:7946`" + `; the ring grows and shrinks at step
boundaries without losing or repeating a sample. Ctrl-C (SIGINT/SIGTERM) stops cleanly:
the node checkpoints, leaves the cluster and exits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runNode(cmd, tf, false) },
	}
	tf.register(trainCmd.Flags(), false)
	root.AddCommand(trainCmd)

	jf := &runFlags{}
	joinCmd := &cobra.Command{
		Use:   "join --seed HOST:PORT",
		Short: "Add this machine to a running cluster",
		Long: `join starts a node that finds the cluster through --seed (the gossip address of any
member), receives the run's configuration, weights, optimizer state and data cursor from a
member, and enters the ring at the next step boundary. Without --data it streams shards
from a member.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runNode(cmd, jf, true) },
	}
	jf.register(joinCmd.Flags(), true)
	root.AddCommand(joinCmd)
}

// runNode builds node options from flags and runs until done or a signal.
func runNode(cmd *cobra.Command, f *runFlags, join bool) error {
	if join && len(f.seeds) == 0 {
		return fmt.Errorf("join needs --seed HOST:PORT, the gossip address of a cluster member")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	sec, err := f.security.Load()
	if err != nil {
		return err
	}
	if err := f.secureAddrs(sec, nil); err != nil {
		return err
	}
	o := node.Options{
		Join:          join,
		Data:          dataset.Options{Dir: f.data, URL: f.dataURL, Peer: f.dataPeer, CacheDir: f.cacheDir},
		CheckpointDir: f.ckptDir, CheckpointEvery: f.ckptEvery, Keep: f.keep, KeepEvery: int64(f.keepEvery),
		Resume: f.resume, Force: f.force, CheckpointLocal: f.ckptLocal,
		CheckpointMaxFailures: f.ckptMaxFailures, MaxBadSteps: f.maxBadSteps,
		RunDir: f.runDir, MaxDuration: f.maxDuration,
		GRPCListen: f.grpcAddr,
		Codec:      f.codec, BucketBytes: int(f.bucketMB * (1 << 20)), AllreduceTimeout: f.allreduceTimeout,
		AllreduceChecksum: f.allreduceChecksum, PowerSGDRank: f.powersgdRank, PowerSGDStart: f.powersgdStart, PowerSGDEmbeddings: f.powersgdEmb,
		MetricsAddr: f.metricsAddr, ChecksumEvery: f.checksumEvery, Progress: f.progress, LogEvery: f.logEvery,
		SampleLog: f.sampleLog,
	}
	if o.CheckpointDir == "" && f.runDir != "" {
		o.CheckpointDir = filepath.Join(f.runDir, "checkpoints")
	}
	if (f.data != "" || f.dataURL != "") && o.Data.CacheDir == "" && f.dataURL != "" {
		o.Data.CacheDir = filepath.Join(f.runDir, "cache")
	}
	cc, err := clusterConfig(f, sec)
	if err != nil {
		return err
	}
	o.Cluster = cc
	o.Explicit = map[string]string{}
	cmd.Flags().Visit(func(fl *pflag.Flag) { o.Explicit[fl.Name] = fl.Value.String() })
	if join {
		delete(o.Explicit, "seed") // join's --seed is where the cluster is, not the run seed
	}
	o.RejoinWait = f.rejoinWait
	if !join {
		// A seed's --peer list is where it looks for a running ring to
		// rejoin; it never waits for those members to answer.
		o.Rejoin, o.Cluster.Seeds = f.seeds, nil
		if f.data == "" && f.dataURL == "" && f.dataPeer == "" {
			return fmt.Errorf("train needs a dataset: --data DIR (make one with trainer prepare), --data-url or --data-peer")
		}
		c, err := f.trainConfig(cmd)
		if err != nil {
			return err
		}
		o.Train = c
	}
	if err := f.validate(&o); err != nil { // flags.go: before a port or directory
		return err
	}
	b, err := device.Open(f.device, f.precision, f.threads)
	if err != nil {
		return err
	}
	defer b.Close()
	o.Backend = b
	return node.Run(ctx, o)
}

// clusterConfig turns the address flags into a cluster.Config.
func clusterConfig(f *runFlags, sec *cluster.Security) (cluster.Config, error) {
	bh, bp, err := splitHostPort("--bind", f.bind)
	if err != nil {
		return cluster.Config{}, err
	}
	c := cluster.Config{
		Name: f.name, BindAddr: bh, BindPort: bp, Seeds: f.seeds, JoinTimeout: f.joinTimeout,
		MinNodes: f.minNodes, MaxNodes: f.maxNodes, Security: sec, Insecure: f.security.Insecure, Data: f.data,
	}
	advHost := ""
	if f.advertise != "" {
		ah, ap, err := splitHostPort("--advertise", f.advertise)
		if err != nil {
			return c, err
		}
		c.AdvertiseAddr, c.AdvertisePort = ah, ap
		advHost = ah
	}
	gh, gp, err := splitHostPort("--grpc", f.grpcAddr)
	if err != nil {
		return c, err
	}
	specific := func(h string) bool { return h != "" && h != "0.0.0.0" && h != "::" }
	switch {
	case f.grpcAdvertise != "":
		if _, _, err := splitHostPort("--grpc-advertise", f.grpcAdvertise); err != nil {
			return c, err
		}
		c.GRPCAddr = f.grpcAdvertise
	case specific(gh):
		if gp != 0 {
			c.GRPCAddr = f.grpcAddr
		} // port 0: the node advertises the port it gets
	case advHost != "" && gp != 0:
		c.GRPCAddr = net.JoinHostPort(advHost, strconv.Itoa(gp))
	case specific(bh) && gp != 0:
		c.GRPCAddr = net.JoinHostPort(bh, strconv.Itoa(gp))
	default:
		// Everything binds every interface: advertise this host's first
		// private address (as memberlist does for gossip), or loopback.
		c.GRPCAddr = net.JoinHostPort(defaultHost(), strconv.Itoa(gp))
	}
	return c, nil
}

func splitHostPort(flag, s string) (string, int, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("%s %q: want host:port: %w", flag, s, err)
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return "", 0, fmt.Errorf("%s %q: bad port %q", flag, s, p)
	}
	return h, port, nil
}

// defaultHost is the first private IPv4 address of this host, or 127.0.0.1.
func defaultHost() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && ipn.IP.IsPrivate() {
				return ipn.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
