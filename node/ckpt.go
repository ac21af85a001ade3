package node

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/difftrain/difftrain/checkpoint"
	"github.com/difftrain/difftrain/train"
)

// datasetID identifies the data by its manifest's shard checksums.
func (n *Node) datasetID() string {
	h := sha256.New()
	for _, s := range n.src.Manifest().Shards {
		h.Write([]byte(s.Name + ":" + s.SHA256 + "\n"))
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func (n *Node) current() checkpoint.Current {
	mc, _ := json.Marshal(n.cfg.Model)
	return checkpoint.Current{
		ModelConfig: mc, ModelHash: n.cfg.Model.Hash(), Config: n.configJSON(),
		Tokenizer: n.src.Manifest().Tokenizer, TokenizerSHA256: n.src.Manifest().TokenizerSHA256, DatasetID: n.datasetID(),
	}
}

// adoptCheckpointConfig checks the stored architecture against the one asked
// for and keeps the stored one; other settings (learning rate, steps) come
// from this run and their changes are logged (after the data is open).
func (n *Node) adoptCheckpointConfig(st *checkpoint.State) error {
	var stored train.Config
	if err := json.Unmarshal(st.Config, &stored); err != nil {
		return fmt.Errorf("checkpoint %s: config: %w", st.Dir, err)
	}
	if n.cfg.Model.Vocab == 0 {
		n.cfg.Model.Vocab = stored.Model.Vocab
	}
	if n.cfg.Model.SeqLen == 0 {
		n.cfg.Model.SeqLen = stored.Model.SeqLen
	}
	if stored.Batch != n.cfg.Batch {
		return fmt.Errorf("checkpoint %s was trained with a global batch of %d sequences, this run asks for %d; the data cursor is counted in batches, so resume with --batch %d", st.Dir, stored.Batch, n.cfg.Batch, stored.Batch)
	}
	if stored.Seed != n.cfg.Seed {
		n.log.Warn("run seed differs from the checkpoint's; keeping the checkpoint's so data order and noise continue", "checkpoint", stored.Seed, "flag", n.cfg.Seed)
		n.cfg.Seed = stored.Seed
	}
	return nil
}

// restoreCheckpoint loads weights, moments, residual and step into the
// trainer built for n.cfg.
func (n *Node) restoreCheckpoint(st *checkpoint.State) error {
	if err := st.Compatible(n.current(), n.log); err != nil {
		return err
	}
	np := n.tr.Model.Params.Len()
	s := train.State{Params: make([]float32, np), M: make([]float32, np), V: make([]float32, np)}
	for _, t := range n.tr.Model.Tensors {
		for _, part := range []struct {
			from []checkpoint.Tensor
			name string
			dst  []float32
		}{{st.Model, t.Name, s.Params}, {st.Optim, t.Name + ".m", s.M}, {st.Optim, t.Name + ".v", s.V}} {
			ct, ok := checkpoint.Find(part.from, part.name)
			if !ok {
				return fmt.Errorf("checkpoint %s: tensor %s missing", st.Dir, part.name)
			}
			if len(ct.Data) != t.Size {
				return fmt.Errorf("checkpoint %s: tensor %s has %d values, the model %d", st.Dir, part.name, len(ct.Data), t.Size)
			}
			copy(part.dst[t.Offset:t.Offset+t.Size], ct.Data)
		}
	}
	if err := n.tr.Restore(&s); err != nil {
		return err
	}
	if len(st.Residuals) > 0 {
		if err := n.grad.SetResidual(st.Residuals); err != nil {
			n.log.Warn("checkpoint residual not restored (codec changed?)", "err", err)
		}
	}
	if st.Cursor != st.Step*int64(n.cfg.Batch) {
		return fmt.Errorf("checkpoint %s: cursor %d is not step %d × batch %d", st.Dir, st.Cursor, st.Step, n.cfg.Batch)
	}
	n.step = st.Step
	n.rs.ck.saved = st.Step
	n.log.Info("resumed", "checkpoint", st.Dir, "step", n.step)
	return nil
}

// save writes a checkpoint if this node is the one that writes: the ring
// coordinator, or every node with --checkpoint-local. The step loop pays for
// a copy into the writer's snapshot buffers; the files are written in the
// background, and their outcome reaches ckptDone. final waits for the write
// and returns its error. A failed save is counted (see afterStep); weights
// that are not finite are never saved and stop the run.
func (n *Node) save(final bool) error {
	if n.ckpt == nil || !n.writes(final) {
		return nil
	}
	t0 := time.Now()
	st := &n.ckState
	err := n.fillState(st)
	if err == nil {
		if err = finiteState(st); err != nil {
			return fmt.Errorf("checkpoint at step %d refused: %w", n.step, err)
		}
		err = n.ckpt.Save(st)
	}
	if err != nil {
		n.ckptDone(n.step, err)
		return n.ckptFailed()
	}
	n.rs.ck.started()
	stall := time.Since(t0)
	n.obs.checkpoint(stall)
	n.log.Info("checkpoint", "step", n.step, "stall_ms", stall.Milliseconds())
	if final {
		if err := n.ckpt.Wait(); err != nil {
			return fmt.Errorf("final checkpoint at step %d: %w", n.step, err)
		}
	}
	return nil
}

// writes reports whether this node writes checkpoints: every node with
// --checkpoint-local, else the coordinator. The final save is the current
// generation's coordinator's: a node that announced the run done is no
// longer electable, so the live view names no coordinator then.
func (n *Node) writes(final bool) bool {
	if n.opt.CheckpointLocal || n.cl.IsCoordinator() {
		return true
	}
	return final && n.cl.Current().Coordinator == n.cl.Name()
}

// finiteState reports the first tensor of st with a NaN or infinite value.
func finiteState(st *checkpoint.State) error {
	for _, ts := range [][]checkpoint.Tensor{st.Model, st.Optim} {
		for _, t := range ts {
			for i, v := range t.Data {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					return fmt.Errorf("tensor %s holds %g at index %d", t.Name, v, i)
				}
			}
		}
	}
	return nil
}

// runState is what the step loop tracks across steps beside the step:
// skipped non-finite steps and the health of checkpoint saves.
type runState struct {
	badSteps int // steps skipped for a non-finite loss or gradient
	ck       ckptHealth
}

// ckptHealth follows the checkpoint saves of this node. The writer reports
// background outcomes from its own goroutine, hence the lock.
type ckptHealth struct {
	mu       sync.Mutex
	saved    int64 // newest step saved or resumed from (0: none)
	failures int   // consecutive failed saves
	lastErr  error
	failStep int64
	retry    bool  // the last save failed: try again at the next step
	warned   int64 // step of the last "no checkpoint for long" warning
}

func (h *ckptHealth) started() {
	h.mu.Lock()
	h.retry = false
	h.mu.Unlock()
}

// ckptDone records the outcome of a save of step (the writer's OnDone).
func (n *Node) ckptDone(step int64, err error) {
	h := &n.rs.ck
	h.mu.Lock()
	if err != nil {
		h.failures++
		h.lastErr, h.failStep, h.retry = err, step, true
	} else {
		h.failures, h.lastErr, h.retry = 0, nil, false
		h.saved = max(h.saved, step)
	}
	fails, saved := h.failures, h.saved
	h.mu.Unlock()
	if n.obs != nil && n.obs.ckm != nil {
		n.obs.ckm.done(step, err, fails, saved)
	}
}

// maxCkptFailures is --checkpoint-max-failures with its default.
func (n *Node) maxCkptFailures() int {
	if n.opt.CheckpointMaxFailures > 0 {
		return n.opt.CheckpointMaxFailures
	}
	return 3
}

// ckptFailed is the error that stops the run once the last
// --checkpoint-max-failures saves all failed.
func (n *Node) ckptFailed() error {
	h := &n.rs.ck
	h.mu.Lock()
	defer h.mu.Unlock()
	if max := n.maxCkptFailures(); h.failures >= max {
		last := "none"
		if h.saved > 0 {
			last = fmt.Sprint(h.saved)
		}
		return fmt.Errorf("checkpoint: the last %d saves failed (--checkpoint-max-failures %d), the last one of step %d: %w; stopping rather than training on without checkpoints (newest saved step: %s)",
			h.failures, max, h.failStep, h.lastErr, last)
	}
	return nil
}

// afterStep runs after every completed step: it saves a checkpoint when one
// is due, retries a failed save as soon as the writer is idle, warns when
// no checkpoint was saved for three intervals, and stops the run after too
// many consecutive failures.
func (n *Node) afterStep() error {
	if err := n.ckptFailed(); err != nil {
		return err
	}
	every := int64(n.opt.CheckpointEvery)
	due := every > 0 && n.step%every == 0 && n.step < int64(n.cfg.Steps)
	h := &n.rs.ck
	h.mu.Lock()
	retry, saved := h.retry, h.saved
	h.mu.Unlock()
	if due || (retry && n.ckpt != nil && !n.ckpt.Busy() && n.step < int64(n.cfg.Steps)) {
		if retry && !due {
			n.log.Warn("retrying a failed checkpoint save", "step", n.step)
		}
		if err := n.save(false); err != nil {
			return err
		}
	}
	writer := n.ckpt != nil && n.writes(false)
	if writer && every > 0 && n.step-saved >= 3*every && n.step-h.warned >= every {
		h.warned = n.step
		n.log.Warn("no checkpoint saved for a long time", "step", n.step, "newest_saved", saved, "checkpoint_every", every)
	}
	return nil
}

// fillState points st's tensors at host copies of the replica's state.
func (n *Node) fillState(st *checkpoint.State) error {
	// The writer copies the tensors into its own snapshot before Save
	// returns, so host-resident buffers are handed over without a copy.
	hs, err := n.hostState()
	if err != nil {
		return err
	}
	p, m, v := hs.Params, hs.M, hs.V
	if st.Model == nil {
		for _, t := range n.tr.Model.Tensors {
			st.Model = append(st.Model, checkpoint.Tensor{Name: t.Name, Shape: t.Shape})
			st.Optim = append(st.Optim, checkpoint.Tensor{Name: t.Name + ".m", Shape: t.Shape}, checkpoint.Tensor{Name: t.Name + ".v", Shape: t.Shape})
		}
	}
	for i, t := range n.tr.Model.Tensors {
		st.Model[i].Data = p[t.Offset : t.Offset+t.Size]
		st.Optim[2*i].Data = m[t.Offset : t.Offset+t.Size]
		st.Optim[2*i+1].Data = v[t.Offset : t.Offset+t.Size]
	}
	st.Residuals = n.grad.Residual()
	cur := n.current()
	st.Step, st.Seed, st.Cursor = n.step, n.cfg.Seed, n.step*int64(n.cfg.Batch)
	st.Epoch = st.Cursor / max(1, n.src.Len())
	st.Schedule = checkpoint.Schedule{Step: n.step, LR: n.cfg.LR * scheduleAt(n.cfg, n.step)}
	st.ModelConfig, st.ModelHash, st.Config = cur.ModelConfig, cur.ModelHash, cur.Config
	st.Tokenizer, st.DatasetID, st.Version = cur.Tokenizer, cur.DatasetID, Version
	st.TokenizerSHA256, st.TokenizerJSON = cur.TokenizerSHA256, n.src.TokenizerJSON()
	return nil
}

func scheduleAt(c train.Config, k int64) float64 {
	oc, err := c.Optim()
	if err != nil {
		return 0
	}
	return oc.Schedule.At(int(k))
}
