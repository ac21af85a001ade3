package train

import (
	"fmt"

	"github.com/difftrain/difftrain/compute"
)

// State is the host copy of everything a trainer's replica holds: parameters
// and optimizer moments in the model's flat layout (model.Layout).
type State struct {
	Params, M, V []float32
}

// Snapshot downloads the replica's state into s, reusing its slices.
func (t *Trainer) Snapshot(s *State) error {
	n := t.Model.Params.Len()
	for _, x := range []struct {
		dst *[]float32
		src compute.Buffer
	}{{&s.Params, t.Model.Params}, {&s.M, t.M}, {&s.V, t.V}} {
		if cap(*x.dst) < n {
			*x.dst = make([]float32, n)
		}
		*x.dst = (*x.dst)[:n]
		t.B.DownloadF32(*x.dst, x.src)
	}
	return t.B.Err()
}

// Restore uploads a state taken by Snapshot (or read from a checkpoint).
func (t *Trainer) Restore(s *State) error {
	n := t.Model.Params.Len()
	if len(s.Params) != n || len(s.M) != n || len(s.V) != n {
		return fmt.Errorf("restore: state holds %d/%d/%d values (params/m/v), the model has %d", len(s.Params), len(s.M), len(s.V), n)
	}
	t.B.UploadF32(t.Model.Params, s.Params)
	t.B.UploadF32(t.M, s.M)
	t.B.UploadF32(t.V, s.V)
	return t.B.Err()
}

// View returns the replica's state without copying when the backend keeps
// its buffers in host memory (compute.Host); ok is false otherwise, and the
// caller uses Snapshot. The slices are live: read them between steps only.
func (t *Trainer) View() (s State, ok bool) {
	h, ok := t.B.(compute.Host)
	if !ok {
		return State{}, false
	}
	return State{Params: h.F32(t.Model.Params), M: h.F32(t.M), V: h.F32(t.V)}, true
}
