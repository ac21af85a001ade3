package main

// `trainer bench allreduce`: ring allreduce throughput of every codec at
// world sizes 2 and 4, each member a separate process, against the raw
// single-connection TCP throughput measured in the same run (and, with --mpi,
// OpenMPI's MPI_Allreduce). With --link-rate the processes run in network
// namespaces whose links are shaped by tc.
//
// Two hidden helpers run in the child processes: allreduce-worker (one ring
// member) and allreduce-tcp (the raw TCP ceiling).

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"os/signal"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/allreduce/netns"
	"github.com/difftrain/difftrain/allreduce/ringbench"
	"github.com/difftrain/difftrain/model"
	"github.com/difftrain/difftrain/train"
	"github.com/spf13/cobra"
)

type arBenchFlags struct {
	worlds    []int
	sizes     []int
	codecs    []string
	bucketMiB float64
	chunkKiB  int
	reps      int
	linkRate  string
	delay     string
	mpi       string
	tcpMiB    int
	deadline  time.Duration
	checksum  bool
	// A model's gradient instead of --sizes (layers > 0), and PowerSGD's rank.
	vocab, layers, dim, heads int
	psgdRank                  int
	psgdEmb                   bool
}

func init() {
	var f arBenchFlags
	cmd := &cobra.Command{
		Use:   "allreduce",
		Short: "Ring allreduce throughput per codec vs raw TCP (and OpenMPI with --mpi)",
		Long: `allreduce runs world sizes of separate processes on 127.0.0.1 (or, with --link-rate,
in network namespaces joined by a bridge and shaped with tc), reduces buffers of
each size with each codec and prints the median time, algbw = bytes/time, busbw =
algbw*2(n-1)/n (as nccl-tests define it), bytes on the wire per member, and the raw
single-connection TCP throughput between two of the same processes as the ceiling.
Times are the max over members of each call (after a barrier), median of the reps
(default max(3, min(20, 512/MiB)), as in mpi_allreduce.c). With --layers the buffer
is the gradient of that model (--dim, --heads, --vocab) and wire_MiB its bytes on
the wire per member per step.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error { return runARBench(cmd.Context(), f) },
	}
	fl := cmd.Flags()
	fl.IntSliceVar(&f.worlds, "world", []int{2, 4}, "world sizes")
	fl.IntSliceVar(&f.sizes, "sizes", []int{1, 16, 64, 256}, "buffer sizes in MiB of fp32")
	fl.StringSliceVar(&f.codecs, "codecs", allreduce.Codecs, "codecs")
	fl.Float64Var(&f.bucketMiB, "bucket-mib", 25, "bucket size in MiB (0: one bucket per buffer)")
	fl.IntVar(&f.chunkKiB, "chunk-kib", allreduce.DefaultChunkBytes>>10, "message size in KiB of fp32")
	fl.IntVar(&f.reps, "reps", 0, "timed calls per point (0: max(3, min(20, 512/MiB)))")
	fl.StringVar(&f.linkRate, "link-rate", "", "run in network namespaces with links shaped to this tc rate (e.g. 1gbit); needs root")
	fl.StringVar(&f.delay, "delay", "", "with --link-rate: one-way delay per link (e.g. 0.2ms; needs the netem qdisc)")
	fl.StringVar(&f.mpi, "mpi", "", "path of a built mpi_allreduce (shared/bench) to run with mpirun in the same run, loopback only")
	fl.IntVar(&f.tcpMiB, "tcp-mib", 256, "MiB sent per raw TCP measurement")
	fl.DurationVar(&f.deadline, "deadline", 30*time.Second, "allreduce deadline for a silent peer")
	fl.BoolVar(&f.checksum, "checksum", false, "CRC-32C every message, as trainer train --allreduce-checksum")
	fl.IntVar(&f.layers, "layers", 0, "reduce the gradient of a model with this many layers instead of --sizes (its tensor shapes go to powersgd)")
	fl.IntVar(&f.dim, "dim", 512, "with --layers: hidden size")
	fl.IntVar(&f.heads, "heads", 8, "with --layers: attention heads")
	fl.IntVar(&f.vocab, "vocab", 260, "with --layers: vocabulary size")
	fl.IntVar(&f.psgdRank, "powersgd-rank", 4, "rank of codec powersgd (with --sizes it sees a buffer as 1024x1024 matrices)")
	fl.BoolVar(&f.psgdEmb, "powersgd-embeddings", false, "with --layers: powersgd compresses the embedding and the head too (as train's flag)")
	benchCmd.AddCommand(cmd)

	worker := &cobra.Command{
		Use: "allreduce-worker", Hidden: true, Args: cobra.NoArgs,
		Short: "one member of `bench allreduce` (reads its plan on stdin)",
	}
	listen := worker.Flags().String("listen", "127.0.0.1:0", "address to listen on")
	worker.RunE = func(cmd *cobra.Command, args []string) error { return ringbench.Worker(*listen, os.Stdin, os.Stdout) }
	benchCmd.AddCommand(worker)

	tcp := &cobra.Command{
		Use: "allreduce-tcp", Hidden: true, Args: cobra.NoArgs,
		Short: "raw TCP ceiling for `bench allreduce`: --listen serves, --connect measures",
	}
	tl := tcp.Flags().String("listen", "", "accept one connection, count bytes to EOF and acknowledge")
	tc := tcp.Flags().String("connect", "", "send --mib MiB to this address and print GB/s")
	tm := tcp.Flags().Int("mib", 512, "MiB to send")
	tcp.RunE = func(cmd *cobra.Command, args []string) error {
		if *tl != "" {
			return ringbench.TCPServe(*tl, os.Stdout)
		}
		if *tc != "" {
			return ringbench.TCPSend(*tc, *tm, os.Stdout)
		}
		return errors.New("allreduce-tcp: give --listen or --connect")
	}
	benchCmd.AddCommand(tcp)

	ring := &cobra.Command{
		Use: "allreduce-tcpring", Hidden: true, Args: cobra.NoArgs,
		Short: "one member of the raw TCP ring ceiling for `bench allreduce` (reads its plan on stdin)",
	}
	rl := ring.Flags().String("listen", "127.0.0.1:0", "address to listen on")
	ring.RunE = func(cmd *cobra.Command, args []string) error { return ringbench.TCPRing(*rl, os.Stdin, os.Stdout) }
	benchCmd.AddCommand(ring)
}

// process is a child process with its stdio.
type process struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func start(cmd *exec.Cmd) (*process, error) {
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 1<<20), 16<<20)
	return &process{cmd: cmd, in: in, out: sc}, nil
}

func (p *process) line() (string, error) {
	if p.out.Scan() {
		return p.out.Text(), nil
	}
	if err := p.out.Err(); err != nil {
		return "", err
	}
	return "", io.ErrUnexpectedEOF
}

// startMembers starts n member processes, member i from cmd(i), each of
// which first prints "addr ADDR", and returns them with their addresses as
// ring peers w0, w1, ... On an error it stops the ones it started.
func startMembers(n int, cmd func(i int) *exec.Cmd) ([]*process, []allreduce.Peer, error) {
	var procs []*process
	var members []allreduce.Peer
	for i := range n {
		p, err := start(cmd(i))
		if err != nil {
			stopAll(procs)
			return nil, nil, fmt.Errorf("member %d: %w", i, err)
		}
		procs = append(procs, p)
		l, err := p.line()
		addr, ok := strings.CutPrefix(l, "addr ")
		if err != nil || !ok {
			stopAll(procs)
			return nil, nil, fmt.Errorf("member %d: no address (%q): %v", i, l, err)
		}
		members = append(members, allreduce.Peer{Name: fmt.Sprintf("w%d", i), Addr: addr})
	}
	return procs, members, nil
}

func stopAll(procs []*process) {
	for _, p := range procs {
		p.stop()
	}
}

// stop lets the process finish (workers end with a barrier) and kills it if
// it has not within a few seconds.
func (p *process) stop() {
	p.in.Close()
	done := make(chan struct{})
	go func() {
		for p.out.Scan() { // drain, so the child never blocks on a full pipe
		}
		p.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		p.cmd.Process.Kill()
		<-done
	}
}

// env says where the child processes run.
type env struct {
	exe string
	lab *netns.Lab // nil: 127.0.0.1
}

func (e env) command(i int, args ...string) *exec.Cmd {
	if e.lab == nil {
		return exec.Command(e.exe, args...)
	}
	return e.lab.Command(i, e.exe, args...)
}

// benchEnv returns where a benchmark's processes run: this executable on
// 127.0.0.1 or, with a rate, in n network namespaces whose links are shaped
// to it; done tears the namespaces down.
func benchEnv(prefix string, n int, rate, delay string) (e env, done func(), err error) {
	exe, err := os.Executable()
	if err != nil {
		return env{}, nil, fmt.Errorf("find own executable: %w", err)
	}
	if rate == "" {
		return env{exe: exe}, func() {}, nil
	}
	return shapedEnv(exe, prefix, n, rate, delay)
}

// shapedEnv sets up n network namespaces whose links are shaped to rate
// (and delay) and returns the env that runs members in them, with the
// function that tears them down (which also happens on ^C).
func shapedEnv(exe, prefix string, n int, rate, delay string) (env, func(), error) {
	if err := netns.Check(); err != nil {
		return env{}, nil, fmt.Errorf("--link-rate: %w", err)
	}
	lab, err := netns.Setup(fmt.Sprintf("%s%d", prefix, os.Getpid()), n, rate, delay)
	if err != nil {
		return env{}, nil, fmt.Errorf("--link-rate: %w", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		if _, ok := <-sig; ok {
			lab.Close()
			os.Exit(130)
		}
	}()
	done := func() {
		signal.Stop(sig)
		close(sig)
		lab.Close()
	}
	return env{exe: exe, lab: lab}, done, nil
}

func (e env) host(i int) string {
	if e.lab == nil {
		return "127.0.0.1"
	}
	return e.lab.Addrs[i]
}

func runARBench(ctx context.Context, f arBenchFlags) error {
	for _, c := range f.codecs {
		if !slices.Contains(allreduce.Codecs, c) {
			return fmt.Errorf("--codecs: unknown codec %q (want %v)", c, allreduce.Codecs)
		}
	}
	for _, s := range f.sizes {
		if s < 1 || s > 4096 {
			return fmt.Errorf("--sizes: %d MiB out of range 1..4096", s)
		}
	}
	if f.psgdRank < 1 {
		return fmt.Errorf("--powersgd-rank %d: want at least 1", f.psgdRank)
	}
	sizes, err := arSizes(f)
	if err != nil {
		return err
	}
	for _, w := range f.worlds {
		if w < 1 || w > 64 {
			return fmt.Errorf("--world: %d out of range 1..64", w)
		}
	}
	if f.delay != "" && f.linkRate == "" {
		return errors.New("--delay needs --link-rate")
	}
	if f.mpi != "" && f.linkRate != "" {
		return errors.New("--mpi runs on loopback only; drop --link-rate")
	}
	e, done, err := benchEnv("dtar", max(2, slices.Max(f.worlds)), f.linkRate, f.delay)
	if err != nil {
		return err
	}
	defer done()
	if e.lab != nil {
		fmt.Printf("# network namespaces %v, members' egress shaped to %s", e.lab.NS, f.linkRate)
		if f.delay != "" {
			fmt.Printf(", delay %s", f.delay)
		}
		fmt.Println()
	}

	where := "127.0.0.1"
	if e.lab != nil {
		where = "namespace 0 -> 1"
	}
	fmt.Printf("# bucket %.4g MiB, chunk %d KiB, checksum %v; GB = 1e9 bytes; time = max over members, median of reps\n", f.bucketMiB, f.chunkKiB, f.checksum)
	fmt.Printf("# busbw = algbw*2(n-1)/n; bus/tcp = busbw / raw TCP measured just before the size's runs;\n")
	fmt.Printf("# bus/ring = busbw / the raw TCP ring (each process sending to its right neighbour while\n")
	fmt.Printf("#   receiving from its left, as the ring does, no reduction): the ceiling when processes share cores;\n")
	fmt.Printf("# cpu_ms = CPU time (user+system) of a member per call, median, mean over members; cpu_x = its CPU per fp32 byte\n")
	fmt.Printf("#   a member sends (2(n-1)/n*size) / the raw TCP ring's CPU per byte sent: the ring's cost on a machine it shares\n")
	fmt.Printf("# wire/fp32 = bytes a member sent / 2(n-1)/n*size; speedup = time(none)/time(codec)\n")
	fmt.Printf("# check: sampled sums within the codec's bound (powersgd: none) and every member holding the same result\n")
	fmt.Printf("# %s (with codec none): the gRPC transport alone, every member sending what none sends, in messages of\n", ringbench.PipeCodec)
	fmt.Printf("#   the same size, and dropping what it receives (no codec, no reduction): the ceiling of a ring over gRPC\n")
	if slices.Contains(f.codecs, allreduce.CodecPowerSGD) {
		shapes := "each MiB size as 1024x1024 matrices, the rest a vector"
		if f.layers > 0 {
			shapes = "the model's tensors"
		}
		fmt.Printf("# powersgd: rank %d, %s\n", f.psgdRank, shapes)
	}
	for _, n := range f.worlds {
		fmt.Printf("%5s %6s %-10s %4s %10s %10s %10s %8s %9s %8s %6s %10s %8s %8s %5s\n",
			"world", "MiB", "codec", "reps", "median_ms", "algbw", "busbw", "bus/tcp", "bus/ring", "cpu_ms", "cpu_x", "wire_MiB", "wire/fp32", "speedup", "check")
		for _, sz := range sizes {
			mib := sz.label
			// The machine is shared and its load changes by the minute:
			// measure the ceiling next to each size's runs.
			tcp, err := measureTCP(e, f.tcpMiB)
			if err != nil {
				return fmt.Errorf("raw TCP ceiling: %w", err)
			}
			fmt.Printf("# world %d, %s MiB: raw TCP, one connection between two processes (%s), %d MiB x 3: median %.3f GB/s\n",
				n, mib, where, f.tcpMiB, tcp)
			ringTCP, ringCPU := math.NaN(), math.NaN()
			if n > 1 {
				if ringTCP, ringCPU, err = measureRing(e, n, f.tcpMiB); err != nil {
					return fmt.Errorf("raw TCP ring: %w", err)
				}
				fmt.Printf("# world %d, %s MiB: raw TCP ring of %d processes, %d MiB sent by each x 3: median %.3f GB/s per process, %.3f CPU s per GB sent\n",
					n, mib, n, f.tcpMiB, ringTCP, ringCPU)
			}
			var base, pipe float64         // none's and the gRPC pipe's median time
			var noneWire, psgdWire float64 // bytes a member sent per call
			err = runWorld(e, n, f, sz, func(r arRow) {
				switch r.codec {
				case allreduce.CodecNone:
					base = r.med
				case ringbench.PipeCodec:
					pipe = r.med
				}
				bytes := sz.bytes()
				alg := bytes / r.med / 1e9
				bus := alg * 2 * float64(n-1) / float64(n)
				ideal := bytes * 2 * float64(n-1) / float64(n) // fp32 bytes a member sends
				ratio, speed := "-", "-"
				if ideal > 0 && r.wire > 0 {
					ratio = fmt.Sprintf("%.3f", r.wire/ideal)
				}
				if base > 0 {
					speed = fmt.Sprintf("%.2f", base/r.med)
				}
				check := "ok"
				if !r.ok {
					check = "FAIL"
				}
				// CPU per fp32 byte a member sends, against the raw ring's
				// per byte it sends.
				cpuX := r.cpu / (ideal / 1e9) / ringCPU
				switch r.codec {
				case allreduce.CodecNone:
					noneWire = r.wire
				case allreduce.CodecPowerSGD:
					psgdWire = r.wire
				}
				fmt.Printf("%5d %6s %-10s %4d %10.2f %10.3f %10.3f %8.2f %9.2f %8.1f %6.2f %10.1f %8s %8s %5s\n",
					n, mib, r.codec, r.reps, r.med*1e3, alg, bus, bus/tcp, bus/ringTCP, r.cpu*1e3, cpuX, r.wire/(1<<20), ratio, speed, check)
			})
			if err != nil {
				return fmt.Errorf("world %d: %w", n, err)
			}
			if base > 0 && pipe > 0 {
				fmt.Printf("# world %d, %s MiB: codec none reaches %.2f of the gRPC pipe's busbw (the transport alone), which reaches %.2f of the raw TCP ring\n",
					n, mib, pipe/base, sz.bytes()*2*float64(n-1)/float64(n)/pipe/1e9/ringTCP)
			}
			if noneWire > 0 && psgdWire > 0 {
				fmt.Printf("# world %d, %s MiB: powersgd rank %d puts %.1fx fewer bytes on the wire than none (%.2f MiB against %.2f per member per step)\n",
					n, mib, f.psgdRank, noneWire/psgdWire, psgdWire/(1<<20), noneWire/(1<<20))
			}
			if f.mpi != "" && sz.mib > 0 {
				if err := runMPI(f.mpi, n, sz.mib, tcp, ringTCP); err != nil {
					return fmt.Errorf("mpi world %d: %w", n, err)
				}
			}
		}
	}
	return nil
}

// arSize is one buffer the benchmark reduces: mib MiB of fp32 (--sizes), or
// the elems of a model's gradient with its tensors (--layers).
type arSize struct {
	label   string
	mib     int
	elems   int
	tensors []allreduce.Tensor
}

func (s arSize) bytes() float64 {
	if s.elems > 0 {
		return 4 * float64(s.elems)
	}
	return float64(s.mib) * (1 << 20)
}

// arSizes returns the buffers of a run.
func arSizes(f arBenchFlags) ([]arSize, error) {
	if f.layers <= 0 {
		var out []arSize
		for _, m := range f.sizes {
			out = append(out, arSize{label: strconv.Itoa(m), mib: m})
		}
		return out, nil
	}
	c := model.Default(f.vocab, f.layers, f.dim, f.heads, 128)
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("--layers %d --dim %d --heads %d --vocab %d: %w", f.layers, f.dim, f.heads, f.vocab, err)
	}
	s := arSize{label: fmt.Sprintf("L%d-d%d", f.layers, f.dim)}
	ts := model.Layout(c)
	s.tensors = train.PowerSGDTensors(ts, f.psgdEmb) // as `trainer train` compresses it
	s.elems = ts[len(ts)-1].Offset + ts[len(ts)-1].Size
	s.label = fmt.Sprintf("%s=%.1f", s.label, s.bytes()/(1<<20))
	return []arSize{s}, nil
}

type arRow struct {
	mib   int
	codec string
	reps  int
	med   float64 // seconds
	cpu   float64 // CPU seconds per member per call (mean over members of the median)
	wire  float64 // bytes sent per member per call (mean over members)
	ok    bool
}

// runWorld starts n workers, hands them the plan and passes on each result
// as it comes.
func runWorld(e env, n int, f arBenchFlags, sz arSize, emit func(arRow)) error {
	procs, members, err := startMembers(n, func(i int) *exec.Cmd {
		return e.command(i, "bench", "allreduce-worker", "--listen", e.host(i)+":0")
	})
	if err != nil {
		return err
	}
	defer stopAll(procs)
	// Next to codec none, the transport alone: its ceiling over gRPC.
	pipe := n > 1 && slices.Contains(f.codecs, allreduce.CodecNone)
	rows := len(f.codecs)
	if pipe {
		rows++
	}
	for i, p := range procs {
		plan := ringbench.Plan{Members: members, Rank: i, Sizes: []int{sz.mib}, Codecs: f.codecs, Reps: f.reps,
			BucketMiB: f.bucketMiB, ChunkKiB: f.chunkKiB, Deadline: f.deadline, Checksum: f.checksum,
			Elems: sz.elems, Tensors: sz.tensors, PowerSGDRank: f.psgdRank, Pipe: pipe}
		b, _ := json.Marshal(plan)
		if _, err := fmt.Fprintf(p.in, "%s\n", b); err != nil {
			return fmt.Errorf("worker %d: send plan: %w", i, err)
		}
	}
	for range rows {
		results := make([]ringbench.Result, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i, p := range procs {
			wg.Go(func() {
				l, err := p.line()
				if err == nil {
					err = json.Unmarshal([]byte(l), &results[i])
				}
				errs[i] = err
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				return fmt.Errorf("worker %d: %w", i, errs[i])
			}
			if results[i].Err != "" {
				return fmt.Errorf("worker %d: %s MiB %d: %s", i, results[i].Codec, results[i].MiB, results[i].Err)
			}
		}
		r := arRow{mib: results[0].MiB, codec: results[0].Codec, reps: len(results[0].Times), ok: true}
		times := make([]float64, r.reps)
		for _, res := range results {
			if len(res.Times) != r.reps || res.MiB != r.mib || res.Codec != r.codec {
				return errors.New("workers disagree on the plan")
			}
			for k, t := range res.Times {
				times[k] = max(times[k], t)
			}
			r.wire += float64(res.Wire) / float64(n)
			r.cpu += median(res.CPU) / float64(n)
			r.ok = r.ok && res.OK && res.Hash == results[0].Hash
		}
		r.med = median(times)
		emit(r)
	}
	return nil
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	sort.Float64s(s)
	if len(s) == 0 {
		return math.NaN()
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// measureTCP runs the raw single-connection ceiling three times between
// members 0 and 1 (separate processes) and returns the median in GB/s.
func measureTCP(e env, mib int) (float64, error) {
	var runs []float64
	for range 3 {
		srv, err := start(e.command(0, "bench", "allreduce-tcp", "--listen", e.host(0)+":0"))
		if err != nil {
			return 0, err
		}
		addr, err := srv.line()
		if err != nil {
			srv.stop()
			return 0, fmt.Errorf("server: %w", err)
		}
		out, err := e.command(1, "bench", "allreduce-tcp", "--connect", addr, "--mib", strconv.Itoa(mib)).Output()
		srv.stop()
		if err != nil {
			return 0, fmt.Errorf("client: %w", err)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
		if err != nil {
			return 0, fmt.Errorf("client said %q", out)
		}
		runs = append(runs, v)
	}
	return median(runs), nil
}

// measureRing runs the raw TCP ring of n processes three times and returns
// the median per-process send rate in GB/s (the slowest member's time) and
// the median CPU seconds a process spent per GB it sent.
func measureRing(e env, n, mib int) (rate, cpu float64, err error) {
	var rates, cpus []float64
	for range 3 {
		v, c, err := ringOnce(e, n, mib)
		if err != nil {
			return 0, 0, err
		}
		rates, cpus = append(rates, v), append(cpus, c)
	}
	return median(rates), median(cpus), nil
}

func ringOnce(e env, n, mib int) (rate, cpu float64, err error) {
	procs, members, err := startMembers(n, func(i int) *exec.Cmd {
		return e.command(i, "bench", "allreduce-tcpring", "--listen", e.host(i)+":0")
	})
	if err != nil {
		return 0, 0, fmt.Errorf("raw TCP ring: %w", err)
	}
	defer stopAll(procs)
	var addrs []string
	for _, m := range members {
		addrs = append(addrs, m.Addr)
	}
	for i, p := range procs {
		b, _ := json.Marshal(ringbench.RingPlan{Addrs: addrs, Rank: i, MiB: mib})
		if _, err := fmt.Fprintf(p.in, "%s\n", b); err != nil {
			return 0, 0, fmt.Errorf("ring member %d: send plan: %w", i, err)
		}
	}
	var slowest, cpus float64
	for i, p := range procs {
		l, err := p.line()
		if err != nil {
			return 0, 0, fmt.Errorf("ring member %d: %w", i, err)
		}
		// seconds, CPU seconds
		fs := strings.Fields(l)
		if len(fs) != 2 {
			return 0, 0, fmt.Errorf("ring member %d said %q", i, l)
		}
		v, err1 := strconv.ParseFloat(fs[0], 64)
		c, err2 := strconv.ParseFloat(fs[1], 64)
		if err1 != nil || err2 != nil || v <= 0 || c < 0 {
			return 0, 0, fmt.Errorf("ring member %d said %q", i, l)
		}
		slowest = max(slowest, v)
		cpus += c
	}
	gb := float64(mib) * (1 << 20) / 1e9
	return gb / slowest, cpus / float64(n) / gb, nil
}

// runMPI runs the OpenMPI baseline and prints its row in the same table.
func runMPI(bin string, n, mib int, tcp, ringTCP float64) error {
	args := []string{"--allow-run-as-root", "--oversubscribe", "--mca", "btl", "self,tcp", "-np", strconv.Itoa(n), bin, strconv.Itoa(mib)}
	cmd := exec.Command("mpirun", args...)
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("mpirun %s: %w", strings.Join(args, " "), err)
	}
	for l := range strings.SplitSeq(string(out), "\n") {
		fs := strings.Fields(l)
		// size MiB reps min_ms median_ms algbw busbw check
		if len(fs) != 8 || fs[0] != "size" {
			continue
		}
		med, _ := strconv.ParseFloat(fs[4], 64)
		alg, _ := strconv.ParseFloat(fs[5], 64)
		bus, _ := strconv.ParseFloat(fs[6], 64)
		check := fs[7]
		fmt.Printf("%5d %6s %-10s %4s %10.2f %10.3f %10.3f %8.2f %9.2f %8s %6s %10s %8s %8s %5s\n",
			n, fs[1], "openmpi", fs[2], med, alg, bus, bus/tcp, bus/ringTCP, "-", "-", "-", "-", "-", check)
	}
	return nil
}
