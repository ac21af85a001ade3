package allreduce

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"testing"
)

// torchFixture is testdata/powersgd_torch.json: what PyTorch's own
// powerSGD_hook (under DistributedDataParallel, two processes) made of known
// gradients. testdata/powersgd_torch.py writes it.
type torchFixture struct {
	Torch string `json:"torch"`
	World int    `json:"world"`
	Rank  int    `json:"rank"`
	Start uint64 `json:"start"`

	Tensors []struct {
		Name  string `json:"name"`
		Shape []int  `json:"shape"`
	} `json:"tensors"`
	// The Qs the hook drew before its first compressed step, in its
	// order, each 1 × cols × rank.
	Q0 []struct {
		Shape  []int     `json:"shape"`
		Values []float32 `json:"values"`
	} `json:"q0"`
	Steps []struct {
		Grads [][]float32 `json:"grads"` // per member, the tensors one after another
		Out   []float32   `json:"out"`   // the hook's result: the members' average
	} `json:"steps"`
}

// TestPowerSGDMatchesTorch runs a ring of two Reducers on the gradients that
// PyTorch's powerSGD_hook was given (rank 4, warm start, error feedback,
// compression from step 2; compressed and uncompressed matrices, a vector, a
// 3-d tensor) from the same first Q, and compares every step's sum with the
// world size times the hook's average, to 1e-5 of the largest magnitude.
// This checks powersgd.go against PyTorch itself, where
// TestPowerSGDMatchesHook checks it against a reading of the hook's source.
func TestPowerSGDMatchesTorch(t *testing.T) {
	raw, err := os.ReadFile("testdata/powersgd_torch.json")
	if err != nil {
		t.Fatal(err)
	}
	var f torchFixture
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatalf("powersgd_torch.json: %v", err)
	}
	var ts []Tensor
	n := 0
	for _, tn := range f.Tensors {
		size := 1
		for _, d := range tn.Shape {
			size *= d
		}
		if len(tn.Shape) > 1 {
			ts = append(ts, Tensor{Off: n, Rows: tn.Shape[0], Cols: size / tn.Shape[0]})
		}
		n += size
	}
	for _, q0 := range f.Q0 {
		if len(q0.Shape) != 3 || q0.Shape[0] != 1 || len(q0.Values) != q0.Shape[1]*q0.Shape[2] {
			t.Fatalf("powersgd_torch.json: a first Q of shape %v with %d values, want 1 × cols × rank", q0.Shape, len(q0.Values))
		}
	}
	cfg := Config{Codec: CodecPowerSGD, Tensors: ts, PowerSGDRank: f.Rank, PowerSGDStart: f.Start, Seed: 1}
	c := newInmemCluster(t, f.World, n, cfg)
	// Start every member from the hook's first Q: Q (cols × k, row-major
	// in the fixture) is stored here as Qᵀ, one column after another.
	for _, r := range c.rs {
		ps := r.psgd
		found := 0
		for _, b := range ps.buckets {
			for _, m := range b.mats {
				for _, q0 := range f.Q0 {
					if q0.Shape[1] != m.cols || q0.Shape[2] != m.rank {
						continue
					}
					found++
					for i := range m.cols {
						for k := range m.rank {
							ps.q[m.q+k*m.cols+i] = q0.Values[i*m.rank+k]
						}
					}
				}
			}
		}
		// Matched by shape: the fixture's compressed tensors all differ in
		// width, and a Q that matched two tensors would be counted twice.
		if found != len(f.Q0) {
			t.Fatalf("the hook compressed %d tensors, the Reducer matched %d of them by shape", len(f.Q0), found)
		}
		ps.qGen = 1 // the Qs set above are this generation's
	}
	W := float64(f.World)
	for step, s := range f.Steps {
		xs := make([][]float32, f.World)
		for i := range xs {
			xs[i] = append([]float32(nil), s.Grads[i]...)
		}
		for i, err := range c.allreduce(1, uint64(step), xs) {
			if err != nil {
				t.Fatalf("step %d member %d: %v", step, i, err)
			}
		}
		scale := 0.0
		for _, v := range s.Out {
			scale = max(scale, math.Abs(W*float64(v)))
		}
		for m, x := range xs {
			for i, v := range x {
				want := W * float64(s.Out[i])
				if d := math.Abs(float64(v) - want); d > 1e-5*scale {
					t.Fatalf("step %d member %d element %d (%s): %v, PyTorch %v (off by %.3g of %.3g)",
						step, m, i, tensorOf(f, i), v, want, d, scale)
				}
			}
		}
	}
	t.Logf("%d steps of PyTorch %s's powerSGD_hook matched", len(f.Steps), f.Torch)
}

// tensorOf names the tensor of the fixture that element i belongs to.
func tensorOf(f torchFixture, i int) string {
	for _, tn := range f.Tensors {
		size := 1
		for _, d := range tn.Shape {
			size *= d
		}
		if i < size {
			return fmt.Sprintf("%s[%d]", tn.Name, i)
		}
		i -= size
	}
	return "past the tensors"
}
