// Package ringbench is the worker side of `trainer bench allreduce`: a ring
// member that runs a plan of allreduce timings in its own process (over the
// gRPC transport), the two ends of the raw single-connection TCP measurement
// that serves as the ceiling, and a member of the raw TCP ring (every member
// sending and receiving at once, as the ring does) that is the ceiling on
// machines whose cores the members share.
package ringbench

import (
	"bufio"
	"cmp"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"syscall"
	"time"

	"github.com/difftrain/difftrain/allreduce"
)

// Plan is what the coordinator sends each worker, as one JSON line.
type Plan struct {
	Members   []allreduce.Peer
	Rank      int
	Sizes     []int
	Codecs    []string
	Reps      int
	BucketMiB float64
	ChunkKiB  int
	Deadline  time.Duration
	Checksum  bool
	// Elems, if positive, replaces Sizes with one buffer of that many
	// elements (a model's gradient, Result.MiB 0) whose tensors are Tensors.
	// Without it, powersgd sees each buffer as SquareSide² matrices.
	Elems        int
	Tensors      []allreduce.Tensor
	PowerSGDRank int
	// Pipe adds, after the codecs of each size, the transport alone
	// (allreduce.Pipe): every member moves the bytes a ring of codec none
	// sends, in messages of the same size, without the reduction. Its
	// Result has Codec PipeCodec.
	Pipe bool
}

// PipeCodec names the Results of Plan.Pipe.
const PipeCodec = "grpc-pipe"

// SquareSide is the side of the matrices powersgd sees a --sizes buffer as.
const SquareSide = 1024

// Squares returns the tensors of a buffer of n elements as SquareSide ×
// SquareSide matrices; the remainder is left as a vector.
func Squares(n int) []allreduce.Tensor {
	var ts []allreduce.Tensor
	for off := 0; off+SquareSide*SquareSide <= n; off += SquareSide * SquareSide {
		ts = append(ts, allreduce.Tensor{Off: off, Rows: SquareSide, Cols: SquareSide})
	}
	return ts
}

// Result is a worker's JSON line for one (size, codec).
type Result struct {
	MiB   int
	Codec string
	Times []float64 // seconds per timed call
	CPU   []float64 // this process's CPU seconds (user and system) per timed call
	Wire  uint64    // message bytes this member sent per call
	OK    bool      // sampled elements match the exact sum within the codec's bound
	Hash  uint64    // FNV-1a of the result: every member must hold the same
	Err   string
}

// RepsFor is the number of timed calls for a size: fixed if positive, else
// max(3, min(20, 512/MiB)) as in mpi_allreduce.c.
func RepsFor(mib, fixed int) int {
	if fixed > 0 {
		return fixed
	}
	return max(3, min(20, 512/max(1, mib)))
}

// Worker is one ring member: it listens on listen, writes "addr ADDR" to
// out, reads its Plan from in and writes one Result line per (size, codec).
// It ends with a barrier, so that no member leaves while another still
// reads from it.
func Worker(listen string, in io.Reader, out io.Writer) error {
	t, stop, err := allreduce.ListenGRPC(listen)
	if err != nil {
		return err
	}
	defer stop()
	defer t.Close()
	fmt.Fprintf(out, "addr %s\n", t.Addr())
	line, err := bufio.NewReader(in).ReadBytes('\n')
	if err != nil {
		return fmt.Errorf("read plan: %w", err)
	}
	var plan Plan
	if err := json.Unmarshal(line, &plan); err != nil {
		return fmt.Errorf("plan: %w", err)
	}
	gen := allreduce.Generation{ID: 1, Members: plan.Members, Rank: plan.Rank}
	n := len(plan.Members)
	barrier, err := allreduce.New(t, 1, allreduce.Config{Deadline: plan.Deadline})
	if err != nil {
		return err
	}
	one := make([]float32, 1)
	var step uint64
	barrierSync := func(ctx context.Context) error {
		step++
		return barrier.Allreduce(ctx, gen, step, one)
	}
	ctx := context.Background()
	enc := json.NewEncoder(out)
	sizes := plan.Sizes
	if plan.Elems > 0 {
		sizes = []int{0}
	}
	for _, mib := range sizes {
		count := mib << 20 / 4
		tensors := Squares(count)
		if plan.Elems > 0 {
			count, tensors = plan.Elems, plan.Tensors
		}
		pristine := make([]float32, count)
		for i := range pristine {
			pristine[i] = GradValue(plan.Rank, i)
		}
		grad := make([]float32, count)
		for _, codec := range plan.Codecs {
			res := Result{MiB: mib, Codec: codec}
			bucket := int(plan.BucketMiB * (1 << 20))
			if bucket <= 0 {
				bucket = count * 4
			}
			r, err := allreduce.New(t, count, allreduce.Config{Codec: codec, BucketBytes: bucket,
				ChunkBytes: plan.ChunkKiB << 10, Deadline: plan.Deadline, Checksum: plan.Checksum,
				Tensors: tensors, PowerSGDRank: plan.PowerSGDRank})
			if err != nil {
				return err
			}
			reps := RepsFor(mib, plan.Reps)
			for w := range 2 + reps {
				copy(grad, pristine)
				if err = barrierSync(ctx); err != nil {
					break
				}
				step++
				s0 := r.Stats().SentBytes
				c0 := CPUTime()
				t0 := time.Now()
				if err = r.Allreduce(ctx, gen, step, grad); err != nil {
					break
				}
				if w >= 2 {
					res.Times = append(res.Times, time.Since(t0).Seconds())
					res.CPU = append(res.CPU, (CPUTime() - c0).Seconds())
					res.Wire = r.Stats().SentBytes - s0
				}
			}
			if err != nil {
				res.Err = err.Error()
			} else {
				res.OK = checkSum(grad, codec, n)
				res.Hash = hash(grad)
			}
			if err := enc.Encode(res); err != nil {
				return err
			}
			if res.Err != "" {
				return errors.New(res.Err)
			}
		}
		if plan.Pipe && n > 1 {
			res := pipe(ctx, t, plan, gen, count, mib, &step, barrierSync)
			if err := enc.Encode(res); err != nil {
				return err
			}
			if res.Err != "" {
				return errors.New(res.Err)
			}
		}
	}
	// Leave together: no member exits while another still reads from it.
	return barrierSync(ctx)
}

// pipe times allreduce.Pipe over t as the plan's reps: every member sends
// what a ring of codec none sends for count elements, 2(n-1) segments of
// count/n, in messages of the plan's chunk.
func pipe(ctx context.Context, t allreduce.Transport, plan Plan, gen allreduce.Generation, count, mib int,
	step *uint64, barrierSync func(context.Context) error) Result {
	res := Result{MiB: mib, Codec: PipeCodec, OK: true}
	n := len(plan.Members)
	total := 2 * (n - 1) * ((count + n - 1) / n) * 4
	chunk := plan.ChunkKiB << 10
	if chunk <= 0 {
		chunk = allreduce.DefaultChunkBytes
	}
	right := plan.Members[(plan.Rank+1)%n].Addr
	deadline := cmp.Or(plan.Deadline, allreduce.DefaultDeadline)
	for w := range 2 + RepsFor(mib, plan.Reps) {
		if err := barrierSync(ctx); err != nil {
			res.Err = err.Error()
			return res
		}
		*step++
		c0 := CPUTime()
		t0 := time.Now()
		sent, err := allreduce.Pipe(ctx, t, right, gen.ID, *step, total, chunk, deadline)
		if err != nil {
			res.Err = err.Error()
			return res
		}
		if w >= 2 {
			res.Times = append(res.Times, time.Since(t0).Seconds())
			res.CPU = append(res.CPU, (CPUTime() - c0).Seconds())
			res.Wire = sent
		}
	}
	return res
}

// CPUTime returns the user and system CPU time this process has used (zero
// where the system cannot tell): on a machine shared with other work it
// says what a run cost better than the time it took.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// hash is FNV-1a over the values' bits.
func hash(v []float32) uint64 {
	h := uint64(14695981039346656037)
	for _, x := range v {
		h = (h ^ uint64(math.Float32bits(x))) * 1099511628211
	}
	return h
}

// GradValue is a deterministic gradient-like value of member rank at index
// i: roughly normal, with a scale that changes every 64 Ki elements (layers
// differ by orders of magnitude).
func GradValue(rank, i int) float32 {
	z := uint64(rank)<<40 ^ uint64(i)
	z += 0x9e3779b97f4a7c15
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	z ^= z >> 31
	u := float64(z>>43)/float64(1<<21) + float64(z>>22&(1<<21-1))/float64(1<<21) + float64(z&(1<<21-1))/float64(1<<21)
	return float32((u - 1.5) * 2 * gradScale(i))
}

func gradScale(i int) float64 { return math.Pow(10, -2-float64(i>>16%4)) }

// checkSum compares sampled elements with the exact sum, within the codec's
// bound (loosened for int8's error feedback, which carries last call's
// residual into this one).
func checkSum(got []float32, codec string, n int) bool {
	if len(got) == 0 {
		return true
	}
	idx := []int{len(got) - 1}
	for i := 0; i < len(got); i += 4099 {
		idx = append(idx, i)
	}
	for _, i := range idx {
		var sum, abs float64
		for r := range n {
			v := float64(GradValue(r, i))
			sum += v
			abs += math.Abs(v)
		}
		var tol float64
		switch codec {
		case allreduce.CodecNone:
			tol = float64(n) * abs * 0x1p-23
		case allreduce.CodecBF16, allreduce.CodecBF16Zstd:
			tol = float64(n) * abs * 0x1p-8 * 1.01
		case allreduce.CodecInt8:
			tol = 2 * float64(n) * float64(n) * 3 * gradScale(i) / 127
		case allreduce.CodecPowerSGD:
			// A low-rank approximation of uncorrelated noise has no
			// element bound; the coordinator checks that every member
			// holds the same result (Hash).
			return true
		}
		if math.Abs(float64(got[i])-sum) > tol {
			return false
		}
	}
	return true
}

// TCPServe accepts one connection on addr (printing the address it listens
// on to out), counts the bytes until EOF and acknowledges them.
func TCPServe(addr string, out io.Writer) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, lis.Addr().String())
	c, err := lis.Accept()
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 4<<20)
	var total uint64
	for {
		k, err := c.Read(buf)
		total += uint64(k)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	return binary.Write(c, binary.LittleEndian, total)
}

// TCPSend sends mib MiB to a TCPServe at addr over one connection and
// prints the throughput in GB/s to out.
func TCPSend(addr string, mib int, out io.Writer) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 4<<20)
	for i := range buf {
		buf[i] = byte(i)
	}
	want := uint64(mib) << 20
	t0 := time.Now()
	for sent := uint64(0); sent < want; {
		k, err := c.Write(buf[:min(uint64(len(buf)), want-sent)])
		if err != nil {
			return err
		}
		sent += uint64(k)
	}
	c.(*net.TCPConn).CloseWrite()
	var got uint64
	if err := binary.Read(c, binary.LittleEndian, &got); err != nil {
		return fmt.Errorf("read acknowledgement: %w", err)
	}
	dt := time.Since(t0).Seconds()
	if got != want {
		return fmt.Errorf("server received %d bytes of %d", got, want)
	}
	fmt.Fprintf(out, "%.4f\n", float64(want)/dt/1e9)
	return nil
}

// RingPlan is what the coordinator sends each member of the raw TCP ring.
type RingPlan struct {
	Addrs []string // listen address of every member, in ring order
	Rank  int
	MiB   int // sent by every member to its right neighbour
}

// TCPRing is one member of the raw TCP ring, the ring allreduce's own
// ceiling: every member sends to its right neighbour and receives from its
// left one at the same time, over one connection each, as the ring does
// (without the reduction). It listens on addr, prints "addr ADDR", reads a
// RingPlan line from in, and prints the seconds its send and receive took
// and the CPU seconds the process spent meanwhile.
func TCPRing(addr string, in io.Reader, out io.Writer) error {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	defer lis.Close()
	fmt.Fprintf(out, "addr %s\n", lis.Addr())
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	if !sc.Scan() {
		return errors.New("tcp ring: no plan on stdin")
	}
	var p RingPlan
	if err := json.Unmarshal(sc.Bytes(), &p); err != nil {
		return fmt.Errorf("tcp ring: plan: %w", err)
	}
	n := len(p.Addrs)
	if n < 2 || p.Rank < 0 || p.Rank >= n || p.MiB < 1 {
		return fmt.Errorf("tcp ring: bad plan: %d members, rank %d, %d MiB", n, p.Rank, p.MiB)
	}
	accepted := make(chan net.Conn, 1)
	acceptErr := make(chan error, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			acceptErr <- err
			return
		}
		accepted <- c
	}()
	right, err := net.Dial("tcp", p.Addrs[(p.Rank+1)%n])
	if err != nil {
		return fmt.Errorf("tcp ring: dial right neighbour: %w", err)
	}
	defer right.Close()
	var left net.Conn
	select {
	case left = <-accepted:
	case err := <-acceptErr:
		return fmt.Errorf("tcp ring: accept left neighbour: %w", err)
	case <-time.After(30 * time.Second):
		return errors.New("tcp ring: left neighbour never connected")
	}
	defer left.Close()
	want := int64(p.MiB) << 20
	sbuf, rbuf := make([]byte, 4<<20), make([]byte, 4<<20)
	for i := range sbuf {
		sbuf[i] = byte(i)
	}
	// Touch the receive buffer before timing (fresh pages are slow here).
	clear(rbuf)
	c0 := CPUTime()
	t0 := time.Now()
	sent := make(chan error, 1)
	go func() {
		for s := int64(0); s < want; {
			k, err := right.Write(sbuf[:min(int64(len(sbuf)), want-s)])
			if err != nil {
				sent <- err
				return
			}
			s += int64(k)
		}
		sent <- nil
	}()
	for got := int64(0); got < want; {
		k, err := left.Read(rbuf[:min(int64(len(rbuf)), want-got)])
		if err != nil {
			return fmt.Errorf("tcp ring: receive: %w", err)
		}
		got += int64(k)
	}
	if err := <-sent; err != nil {
		return fmt.Errorf("tcp ring: send: %w", err)
	}
	fmt.Fprintf(out, "%.6f %.6f\n", time.Since(t0).Seconds(), (CPUTime() - c0).Seconds())
	return nil
}
