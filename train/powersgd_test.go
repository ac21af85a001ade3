package train

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/difftrain/difftrain/allreduce"
	"github.com/difftrain/difftrain/model"
)

// TestPowerSGDTensors: by default the embedding and the head are left out of
// the tensors PowerSGD compresses, and a ring of two sums them exactly while
// it compresses the other matrices; with embeddings they are listed too.
func TestPowerSGDTensors(t *testing.T) {
	ts := model.Layout(model.Default(40, 1, 16, 2, 8))
	n := ts[len(ts)-1].Offset + ts[len(ts)-1].Size
	isVocab := func(name string) bool {
		return strings.Contains(name, "embed_tokens") || strings.Contains(name, "lm_head")
	}
	var vocab []model.Tensor
	for _, tn := range ts {
		if isVocab(tn.Name) {
			vocab = append(vocab, tn)
		}
	}
	if len(vocab) != 2 {
		t.Fatalf("%d embedding and head tensors in the layout, want 2", len(vocab))
	}
	all := PowerSGDTensors(ts, true)
	if len(all) != len(ts) {
		t.Errorf("with embeddings: %d tensors listed, want all %d", len(all), len(ts))
	}
	some := PowerSGDTensors(ts, false)
	if len(some) != len(ts)-2 {
		t.Errorf("without embeddings: %d tensors listed, want %d", len(some), len(ts)-2)
	}
	for _, a := range some {
		for _, v := range vocab {
			if a.Off == v.Offset {
				t.Errorf("%s is listed for compression", v.Name)
			}
		}
	}

	// Two members, compressing from step 0 at rank 1.
	net := allreduce.NewInmemNetwork()
	peers := []allreduce.Peer{{Name: "a", Addr: "a"}, {Name: "b", Addr: "b"}}
	rs := make([]*allreduce.Reducer, 2)
	xs := make([][]float32, 2)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range rs {
		tp, err := net.Transport(peers[i].Addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tp.Close() })
		rs[i], err = allreduce.New(tp, n, allreduce.Config{Codec: allreduce.CodecPowerSGD, Tensors: some, PowerSGDRank: 1, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		xs[i] = make([]float32, n)
		for j := range xs[i] {
			xs[i][j] = float32(rng.NormFloat64())
		}
	}
	sum := make([]float32, n)
	for j := range sum {
		sum[j] = xs[0][j] + xs[1][j]
	}
	errs := make([]error, 2)
	done := make(chan int)
	for i := range rs {
		go func() {
			errs[i] = rs[i].Allreduce(context.Background(), allreduce.Generation{ID: 1, Members: peers, Rank: i}, 0, xs[i])
			done <- i
		}()
	}
	<-done
	<-done
	for i, err := range errs {
		if err != nil {
			t.Fatalf("member %d: %v", i, err)
		}
	}
	for _, tn := range ts {
		exact := true
		for j := tn.Offset; j < tn.Offset+tn.Size; j++ {
			exact = exact && xs[0][j] == sum[j]
		}
		switch {
		case isVocab(tn.Name) && !exact:
			t.Errorf("%s: not the exact sum", tn.Name)
		case !isVocab(tn.Name) && len(tn.Shape) == 2 && tn.Size >= 16*16 && exact:
			t.Errorf("%s: the exact sum, want it compressed", tn.Name)
		}
	}
}

// TestUncompressedShare: the embedding and the head are a small share of the
// demo model's gradient with the byte vocabulary, and most of it with a
// tokenizer's.
func TestUncompressedShare(t *testing.T) {
	for _, c := range []struct {
		vocab  int
		lo, hi float64
		shape  string
	}{{260, 0.07, 0.09, "demo, bytes"}, {32768, 0.9, 0.92, "demo, 32k tokens"}} {
		ts := model.Layout(model.Default(c.vocab, 4, 128, 4, 128))
		total := 0
		for _, tn := range ts {
			total += tn.Size
		}
		got, want := UncompressedShare(ts), float64(2*c.vocab*128)/float64(total)
		if got != want || got < c.lo || got > c.hi {
			t.Errorf("%s: share %.4f, want 2·vocab·d / all = %.4f, in [%.2f, %.2f]", c.shape, got, want, c.lo, c.hi)
		}
	}
}
