package ringbench

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/difftrain/difftrain/allreduce"
)

// TestWorkers runs two workers in-process, as the coordinator would run two
// processes, and checks that every codec's result passes its sum check.
func TestWorkers(t *testing.T) {
	const n = 2
	type pipe struct {
		in  *io.PipeWriter
		out *bufio.Scanner
	}
	var ps []pipe
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		wg.Go(func() {
			errs[i] = Worker("127.0.0.1:0", inR, outW)
			outW.Close()
		})
		ps = append(ps, pipe{inW, bufio.NewScanner(outR)})
	}
	var members []allreduce.Peer
	for i, p := range ps {
		if !p.out.Scan() {
			t.Fatalf("worker %d printed no address", i)
		}
		addr, ok := strings.CutPrefix(p.out.Text(), "addr ")
		if !ok {
			t.Fatalf("worker %d: %q", i, p.out.Text())
		}
		members = append(members, allreduce.Peer{Name: fmt.Sprint(i), Addr: addr})
	}
	for i, p := range ps {
		b, _ := json.Marshal(Plan{Members: members, Rank: i, Sizes: []int{1}, Codecs: allreduce.Codecs,
			Reps: 2, BucketMiB: 0.25, ChunkKiB: 64, Deadline: 10 * time.Second, Pipe: true})
		fmt.Fprintf(p.in, "%s\n", b)
	}
	for k := range len(allreduce.Codecs) + 1 { // the codecs, then the pipe
		want := PipeCodec
		if k < len(allreduce.Codecs) {
			want = allreduce.Codecs[k]
		}
		var h0 uint64
		for i, p := range ps {
			if !p.out.Scan() {
				t.Fatalf("worker %d stopped early", i)
			}
			var r Result
			if err := json.Unmarshal(p.out.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			if r.Err != "" || !r.OK || len(r.Times) != 2 || len(r.CPU) != 2 || r.Wire == 0 || r.Codec != want {
				t.Errorf("worker %d, want %s: %+v", i, want, r)
			}
			if i == 0 {
				h0 = r.Hash
			} else if r.Hash != h0 {
				t.Errorf("%s: worker %d holds a result with hash %x, worker 0 %x", r.Codec, i, r.Hash, h0)
			}
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("worker %d: %v", i, err)
		}
	}
}

func TestTCP(t *testing.T) {
	addrR, addrW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- TCPServe("127.0.0.1:0", addrW) }()
	addr, err := bufio.NewReader(addrR).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := TCPSend(strings.TrimSpace(addr), 8, &out); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if v, err := strconv.ParseFloat(strings.TrimSpace(out.String()), 64); err != nil || v <= 0 {
		t.Fatalf("TCPSend printed %q", out.String())
	}
}

func TestRepsFor(t *testing.T) {
	for _, c := range []struct{ mib, fixed, want int }{{1, 0, 20}, {64, 0, 8}, {256, 0, 3}, {4096, 0, 3}, {64, 5, 5}} {
		if got := RepsFor(c.mib, c.fixed); got != c.want {
			t.Errorf("RepsFor(%d, %d) = %d, want %d", c.mib, c.fixed, got, c.want)
		}
	}
}

// TestTCPRing runs three raw TCP ring members in-process and checks each
// reports a positive time; a bad plan is refused.
func TestTCPRing(t *testing.T) {
	const n = 3
	var ins []*io.PipeWriter
	var outs []*bufio.Scanner
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		inR, inW := io.Pipe()
		outR, outW := io.Pipe()
		wg.Go(func() {
			errs[i] = TCPRing("127.0.0.1:0", inR, outW)
			outW.Close()
		})
		ins, outs = append(ins, inW), append(outs, bufio.NewScanner(outR))
	}
	var addrs []string
	for i, sc := range outs {
		if !sc.Scan() {
			t.Fatalf("member %d printed no address", i)
		}
		a, ok := strings.CutPrefix(sc.Text(), "addr ")
		if !ok {
			t.Fatalf("member %d: %q", i, sc.Text())
		}
		addrs = append(addrs, a)
	}
	for i, in := range ins {
		b, _ := json.Marshal(RingPlan{Addrs: addrs, Rank: i, MiB: 8})
		fmt.Fprintf(in, "%s\n", b)
	}
	for i, sc := range outs {
		if !sc.Scan() {
			t.Fatalf("member %d printed no time", i)
		}
		fs := strings.Fields(sc.Text())
		if len(fs) != 2 {
			t.Fatalf("member %d: %q, want seconds and CPU seconds", i, sc.Text())
		}
		if v, err := strconv.ParseFloat(fs[0], 64); err != nil || v <= 0 {
			t.Fatalf("member %d: %q", i, sc.Text())
		}
		if v, err := strconv.ParseFloat(fs[1], 64); err != nil || v < 0 {
			t.Fatalf("member %d: %q", i, sc.Text())
		}
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("member %d: %v", i, err)
		}
	}

	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	done := make(chan error, 1)
	go func() { done <- TCPRing("127.0.0.1:0", inR, outW); outW.Close() }()
	go io.Copy(io.Discard, outR)
	fmt.Fprintf(inW, "%s\n", `{"Addrs":["a"],"Rank":0,"MiB":1}`)
	if err := <-done; err == nil || !strings.Contains(err.Error(), "bad plan") {
		t.Errorf("one-member plan: %v", err)
	}
}
