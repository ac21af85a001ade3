package checkpoint

import (
	"bytes"
	"encoding/json"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
)

// copyLocked copies st into w.snap. Tensor buffers are reused when the
// layout (names and shapes) is unchanged, so a steady-state snapshot is a
// memcpy into memory that is already mapped, spread over the CPUs.
func (w *Writer) copyLocked(st *State) {
	s := &w.snap
	s.Step, s.Seed, s.Run, s.Cursor, s.Epoch = st.Step, st.Seed, st.Run, st.Cursor, st.Epoch
	if s.Run == "" {
		s.Run = runID(st.Seed)
	}
	s.Schedule = st.Schedule
	var jobs []copyJob
	s.Model, jobs = layoutTensors(s.Model, st.Model, jobs)
	s.Optim, jobs = layoutTensors(s.Optim, st.Optim, jobs)
	var res []Tensor
	res, jobs = layoutTensors(residualTensors(s.Residuals), residualTensors(st.Residuals), jobs)
	s.Residuals = nil
	if len(res) > 0 {
		s.Residuals = res[0].Data
	}
	parallelCopy(jobs)
	s.ModelConfig = copyJSON(s.ModelConfig, st.ModelConfig)
	s.ModelHash = st.ModelHash
	s.Config = copyJSON(s.Config, st.Config)
	s.Tokenizer, s.DatasetID, s.Version = st.Tokenizer, st.DatasetID, st.Version
	s.TokenizerSHA256 = st.TokenizerSHA256
	if !bytes.Equal(s.TokenizerJSON, st.TokenizerJSON) { // unchanged in a run: copied once
		s.TokenizerJSON = append(s.TokenizerJSON[:0:0], st.TokenizerJSON...)
	}
	s.Extra = copyJSON(s.Extra, st.Extra)
	s.Dir = ""
}

// copyJob is one copy of a snapshot.
type copyJob struct{ dst, src []float32 }

// layoutTensors makes dst match the layout of src, reallocating (as one flat
// buffer) only when the layout differs, and appends the copies of src's data
// to jobs in pieces of at most copyChunk values.
func layoutTensors(dst, src []Tensor, jobs []copyJob) ([]Tensor, []copyJob) {
	if !sameLayout(dst, src) {
		total := 0
		for _, t := range src {
			total += len(t.Data)
		}
		flat := make([]float32, total)
		dst = make([]Tensor, len(src))
		off := 0
		for i, t := range src {
			n := len(t.Data)
			dst[i] = Tensor{Name: t.Name, Shape: slices.Clone(t.Shape), Data: flat[off : off+n : off+n]}
			off += n
		}
	}
	for i, t := range src {
		for lo := 0; lo < len(t.Data); lo += copyChunk {
			hi := min(lo+copyChunk, len(t.Data))
			jobs = append(jobs, copyJob{dst[i].Data[lo:hi], t.Data[lo:hi]})
		}
	}
	return dst, jobs
}

// copyChunk is the largest single copy: 4 MiB.
const copyChunk = 1 << 20

// parallelCopy runs jobs on up to GOMAXPROCS goroutines.
func parallelCopy(jobs []copyJob) {
	workers := min(runtime.GOMAXPROCS(0), len(jobs)/4+1)
	var next atomic.Int64
	work := func() {
		for {
			i := int(next.Add(1) - 1)
			if i >= len(jobs) {
				return
			}
			copy(jobs[i].dst, jobs[i].src)
		}
	}
	var wg sync.WaitGroup
	for range workers - 1 {
		wg.Go(work)
	}
	work()
	wg.Wait()
}

func sameLayout(a, b []Tensor) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || !slices.Equal(a[i].Shape, b[i].Shape) || len(a[i].Data) != len(b[i].Data) {
			return false
		}
	}
	return true
}

// copyJSON stores src compacted into dst's memory.
func copyJSON(dst, src json.RawMessage) json.RawMessage {
	if len(src) == 0 {
		return nil
	}
	b := bytes.NewBuffer(dst[:0])
	if err := json.Compact(b, src); err != nil {
		return append(dst[:0], src...) // check has validated src; unreachable
	}
	return b.Bytes()
}
