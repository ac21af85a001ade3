package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/difftrain/difftrain/cluster"
)

var statusFlags struct {
	seed, addr string
	timeout    time.Duration
	json       bool
	sec        cluster.SecurityFlags
}

var statusCmd = &cobra.Command{
	Use:   "status",
	Short: "Show a cluster's members, generation, step, loss and throughput",
	Long: `status asks a running cluster how it is doing. Give either --seed, the gossip
address of any node (the one "trainer join --seed" takes), or --addr, the gRPC
address of any node. Every live member is then asked for its own step, loss and
throughput. The cluster secret ($DIFFTRAIN_CLUSTER_KEY or --cluster-key-file) and TLS
files must match the cluster's: a cluster with a key answers nobody without it. With
--seed on another machine, status briefly listens for gossip there, which without a
key needs --insecure.`,
	Args: cobra.NoArgs,
	RunE: func(cmd *cobra.Command, args []string) error {
		f := &statusFlags
		if (f.seed == "") == (f.addr == "") {
			return errors.New("give exactly one of --seed (gossip address) or --addr (gRPC address)")
		}
		sec, err := f.sec.Load()
		if err != nil {
			return err
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), f.timeout)
		defer cancel()
		addr := f.addr
		if f.seed != "" {
			members, err := cluster.Discover(ctx, f.seed, sec, f.sec.Insecure)
			if err != nil {
				return err
			}
			if addr = firstAddr(members); addr == "" {
				return fmt.Errorf("no member reachable through %s announces a gRPC address", f.seed)
			}
		}
		st, err := cluster.QueryStatus(ctx, addr, sec)
		if err != nil {
			return keyHint(err, sec)
		}
		report := collect(ctx, st, addr, sec)
		if f.json {
			enc := json.NewEncoder(cmd.OutOrStdout())
			enc.SetIndent("", "  ")
			return enc.Encode(report)
		}
		return printStatus(cmd.OutOrStdout(), report, time.Now())
	},
}

func init() {
	fs := statusCmd.Flags()
	fs.StringVar(&statusFlags.seed, "seed", "", "gossip address host:port of any node")
	fs.StringVar(&statusFlags.addr, "addr", "", "gRPC address host:port of any node")
	fs.DurationVar(&statusFlags.timeout, "timeout", 10*time.Second, "give up after this long")
	fs.BoolVar(&statusFlags.json, "json", false, "print JSON instead of a table")
	statusFlags.sec.Register(fs)
	root.AddCommand(statusCmd)
}

// keyHint says what to do when a member refused the call for want of
// the cluster's key.
func keyHint(err error, sec *cluster.Security) error {
	if status.Code(err) != codes.Unauthenticated {
		return err
	}
	if sec == nil {
		return fmt.Errorf("%w: the cluster has a key; set %s or --cluster-key-file", err, cluster.EnvKey)
	}
	return fmt.Errorf("%w: the cluster key (or TLS files) differ from the cluster's", err)
}

// firstAddr picks a gRPC address to ask, preferring members in a ring.
func firstAddr(ms []cluster.MemberInfo) string {
	slices.SortFunc(ms, func(a, b cluster.MemberInfo) int {
		if (a.State == cluster.StateTraining) != (b.State == cluster.StateTraining) {
			if a.State == cluster.StateTraining {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Name, b.Name)
	})
	for _, m := range ms {
		if m.GRPCAddr != "" {
			return m.GRPCAddr
		}
	}
	return ""
}

// memberReport is one row of the output.
type memberReport struct {
	cluster.MemberInfo
	Rank  int                 `json:"rank"` // -1: not in the generation
	Info  *cluster.StatusInfo `json:"info,omitempty"`
	Error string              `json:"error,omitempty"`
}

type statusReport struct {
	Queried     string             `json:"queried"`
	Coordinator string             `json:"coordinator"`
	Generation  cluster.Generation `json:"generation"`
	Members     []memberReport     `json:"members"`
}

// collect asks every member in st for its own status, in parallel.
func collect(ctx context.Context, st cluster.Status, queried string, sec *cluster.Security) statusReport {
	r := statusReport{Queried: queried, Coordinator: st.Coordinator, Generation: st.Gen}
	r.Members = make([]memberReport, len(st.Members))
	var wg sync.WaitGroup
	for i, m := range st.Members {
		r.Members[i] = memberReport{MemberInfo: m, Rank: st.Gen.Rank(m.Name)}
		if m.Name == st.Self {
			info := st.Info
			r.Members[i].Info = &info
			continue
		}
		if m.GRPCAddr == "" {
			continue
		}
		wg.Go(func() {
			s, err := cluster.QueryStatus(ctx, m.GRPCAddr, sec)
			if err != nil {
				r.Members[i].Error = keyHint(err, sec).Error()
				return
			}
			r.Members[i].Info = &s.Info
		})
	}
	wg.Wait()
	return r
}

func printStatus(w io.Writer, r statusReport, now time.Time) error {
	g := r.Generation
	if g.ID == 0 {
		fmt.Fprintf(w, "no generation formed yet; coordinator %s\n", orDash(r.Coordinator))
	} else {
		fmt.Fprintf(w, "generation %d: %d members from step %d, coordinator %s\n", g.ID, len(g.Ring), g.Start, orDash(r.Coordinator))
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSTATE\tGEN\tRANK\tGRPC\tBACKEND\tDATA\tVERSION\tSTEP\tLOSS\tTOKENS/S\tUPDATED")
	var total float64
	for _, m := range r.Members {
		rank := "-"
		if m.Rank >= 0 {
			rank = fmt.Sprint(m.Rank)
		}
		step, loss, tps, upd := "-", "-", "-", "-"
		if m.Info != nil && !m.Info.Updated.IsZero() {
			step = fmt.Sprint(m.Info.Step)
			loss = fmtFloat(m.Info.Loss, "%.4f")
			tps = fmtFloat(m.Info.TokensPerSec, "%.0f")
			upd = now.Sub(m.Info.Updated).Round(time.Second).String() + " ago"
			if m.Rank >= 0 && !math.IsNaN(m.Info.TokensPerSec) {
				total += m.Info.TokensPerSec
			}
		}
		if m.Error != "" {
			upd = "unreachable: " + m.Error
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", m.Name, m.State, m.Gen, rank,
			orDash(m.GRPCAddr), orDash(m.Backend), orDash(m.Data), orDash(m.Version), step, loss, tps, upd)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if g.ID != 0 {
		_, err := fmt.Fprintf(w, "ring throughput: %.0f tokens/s\n", total)
		return err
	}
	return nil
}

func fmtFloat(v float64, format string) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprint(v)
	}
	return fmt.Sprintf(format, v)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
