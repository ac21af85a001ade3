package checkpoint

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Options configure a Writer.
type Options struct {
	// Keep is how many complete checkpoints to keep, newest first: 0 means
	// 3, a negative value keeps all, and 1 is refused because the newest
	// checkpoint may be damaged or still in flight when the previous one goes.
	Keep int
	// KeepEvery, when positive, also keeps forever every checkpoint whose
	// step is a multiple of it.
	KeepEvery int64
	// Logger receives save and retention events; nil means slog.Default().
	Logger *slog.Logger
	// OnDone, when set, is called from the background after every save
	// with its step and outcome (nil: the checkpoint is in place), before
	// Wait returns. It must not call the Writer's waiting methods.
	OnDone func(step int64, err error)

	// Test hooks: create opens a new file for writing, afterFile runs after
	// each file of a save is complete.
	create    func(path string) (file, error)
	afterFile func(name string)
}

// file is what a save writes to; *os.File in production.
type file interface {
	io.Writer
	Sync() error
	Close() error
}

func createFile(path string) (file, error) {
	return os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
}

// Writer saves checkpoints into one directory in the background. Save copies
// the state into snapshot buffers that are allocated once and reused; at most
// one save is in flight, and Save waits for it rather than queueing. Its
// methods are safe for concurrent use.
type Writer struct {
	dir string
	opt Options
	log *slog.Logger

	mu       sync.Mutex
	snap     State
	inflight chan struct{} // closed when the save in flight ends; nil if none
	err      error         // error of the last completed save
	closed   bool
}

// NewWriter returns a Writer for dir, creating it if needed and removing what
// interrupted saves left there.
func NewWriter(dir string, opt Options) (*Writer, error) {
	switch {
	case opt.Keep == 0:
		opt.Keep = 3
	case opt.Keep == 1:
		return nil, errors.New("checkpoint: keeping only 1 checkpoint is refused: the newest may be damaged or still being written when the previous one is deleted; keep at least 2")
	}
	if opt.KeepEvery < 0 {
		return nil, fmt.Errorf("checkpoint: keep-every %d is negative", opt.KeepEvery)
	}
	if opt.create == nil {
		opt.create = createFile
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("checkpoint dir: %w", err)
	}
	w := &Writer{dir: dir, opt: opt, log: logger(opt.Logger)}
	if _, err := Clean(dir, w.log); err != nil {
		return nil, err
	}
	return w, nil
}

// Prepare allocates and touches the snapshot buffers for states shaped like
// st, so that the first Save costs no more than later ones. Optional.
func (w *Writer) Prepare(st *State) error {
	if err := st.check(); err != nil {
		return fmt.Errorf("checkpoint step %d: %w", st.Step, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waitLocked()
	w.copyLocked(st)
	return nil
}

// Save snapshots st and writes it in the background as checkpoint st.Step.
// It first waits for a save still in flight. It returns once the snapshot is
// taken: st may change afterwards. The outcome of the write is reported by
// Wait and LastError.
func (w *Writer) Save(st *State) error {
	return w.save(st, false)
}

// SaveOwned is Save without the snapshot copy, for callers that already
// hold a private host copy (e.g. downloaded from a device): the writer reads
// st's tensors until the save completes, so the caller must not change them
// before its next call to Save, SaveOwned, Wait or Close returns. Two host
// copies used in turn satisfy this.
func (w *Writer) SaveOwned(st *State) error {
	return w.save(st, true)
}

func (w *Writer) save(st *State, owned bool) error {
	if err := st.check(); err != nil {
		return fmt.Errorf("checkpoint step %d: %w", st.Step, err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waitLocked()
	if w.closed {
		return errors.New("checkpoint: writer is closed")
	}
	snap := &w.snap
	if owned {
		own := *st
		if own.Run == "" {
			own.Run = runID(own.Seed)
		}
		own.ModelConfig, own.Config, own.Extra = compact(st.ModelConfig), compact(st.Config), compact(st.Extra)
		snap = &own
	} else {
		w.copyLocked(st)
	}
	done := make(chan struct{})
	w.inflight = done
	step, dir := snap.Step, filepath.Join(w.dir, StepDir(snap.Step))
	go func() {
		start := time.Now()
		err := w.persist(snap)
		if err != nil {
			w.log.Error("checkpoint save failed", "step", step, "err", err)
		} else {
			w.log.Info("checkpoint saved", "step", step, "dir", dir, "took", time.Since(start))
		}
		if w.opt.OnDone != nil {
			w.opt.OnDone(step, err)
		}
		w.mu.Lock()
		w.err = err
		w.inflight = nil
		w.mu.Unlock()
		close(done)
	}()
	return nil
}

// waitLocked waits, with w.mu held, until no save is in flight.
func (w *Writer) waitLocked() {
	for w.inflight != nil {
		done := w.inflight
		w.mu.Unlock()
		<-done
		w.mu.Lock()
	}
}

// Wait blocks until no save is in flight and returns LastError.
func (w *Writer) Wait() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waitLocked()
	return w.err
}

// Busy reports whether a save is in flight. It does not wait.
func (w *Writer) Busy() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inflight != nil
}

// LastError returns the error of the last completed save, nil if it
// succeeded or none completed yet. It does not wait.
func (w *Writer) LastError() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// Close waits for the save in flight and refuses further saves. It returns
// the error of the last save.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waitLocked()
	w.closed = true
	return w.err
}

// persist writes snap atomically: every file into a temporary directory,
// each fsynced, then the directory fsynced, renamed into place and the
// parent fsynced. On failure the temporary directory is removed.
func (w *Writer) persist(snap *State) (err error) {
	name := StepDir(snap.Step)
	final := filepath.Join(w.dir, name)
	replace := false
	if _, err := os.Lstat(final); err == nil {
		// The same run saving a step twice (e.g. right after resuming from
		// it) is done already, and another run's complete checkpoint is a
		// conflict. A directory that does not verify (damaged, or with no
		// manifest: not made by a Writer) is replaced by this save.
		old, lerr := Load(final)
		switch {
		case lerr == nil && old.Run == snap.Run:
			w.log.Info("checkpoint already saved", "dir", final)
			return nil
		case lerr == nil:
			return fmt.Errorf("checkpoint %s already exists and is not of run %q", final, snap.Run)
		}
		w.log.Warn("replacing a checkpoint that does not verify", "dir", final, "err", lerr)
		replace = true
	}
	tmp := filepath.Join(w.dir, tmpPrefix+name+"-"+owner()+"-"+randHex())
	active.Store(tmp, true)
	defer active.Delete(tmp)
	if err := os.Mkdir(tmp, 0o755); err != nil {
		return fmt.Errorf("checkpoint %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			if rerr := os.RemoveAll(tmp); rerr != nil {
				w.log.Warn("could not remove a failed checkpoint save", "path", tmp, "err", rerr)
			}
			err = fmt.Errorf("checkpoint %s: %w", name, err)
		}
	}()
	stateJSON, err := encodeState(snap)
	if err != nil {
		return fmt.Errorf("%s: %w", StateFile, err)
	}
	meta := map[string]string{"format": "pt", "step": fmt.Sprint(snap.Step)}
	writers := map[string]func(io.Writer) error{
		StateFile:     func(f io.Writer) error { _, err := f.Write(stateJSON); return err },
		ModelFile:     func(f io.Writer) error { return writeSafetensors(f, snap.Model, meta) },
		OptimFile:     func(f io.Writer) error { return writeSafetensors(f, snap.Optim, meta) },
		ResidualsFile: func(f io.Writer) error { return writeSafetensors(f, residualTensors(snap.Residuals), meta) },
	}
	m := Manifest{Format: Format, Run: snap.Run, Step: snap.Step}
	for _, fn := range dataFiles {
		e, err := w.writeFile(filepath.Join(tmp, fn), writers[fn])
		if err != nil {
			return err
		}
		m.Files = append(m.Files, e)
	}
	if len(snap.TokenizerJSON) > 0 {
		e, err := w.writeFile(filepath.Join(tmp, TokenizerFile), func(f io.Writer) error { _, err := f.Write(snap.TokenizerJSON); return err })
		if err != nil {
			return err
		}
		// The digest was hashed from what was written: a file that is not
		// the one state.json names is never saved.
		if e.SHA256 != snap.TokenizerSHA256 {
			return fmt.Errorf("%s: sha256 %s, but the state records tokenizer sha256 %s", TokenizerFile, e.SHA256, snap.TokenizerSHA256)
		}
		m.Files = append(m.Files, e)
	}
	mb, err := encodeManifest(&m)
	if err != nil {
		return err
	}
	if _, err := w.writeFile(filepath.Join(tmp, ManifestFile), func(f io.Writer) error { _, err := f.Write(mb); return err }); err != nil {
		return err
	}
	if err := syncDir(tmp); err != nil {
		return err
	}
	if replace {
		if err := w.replace(tmp, final); err != nil {
			return err
		}
	} else if err := os.Rename(tmp, final); err != nil {
		// Rename fails if another writer completed this step meanwhile: a
		// non-empty directory is never replaced.
		return err
	}
	if err := syncDir(w.dir); err != nil {
		return err
	}
	w.retain()
	return nil
}

// writeFile creates path, fills it with fill, fsyncs and closes it, and
// returns its manifest entry.
func (w *Writer) writeFile(path string, fill func(io.Writer) error) (FileEntry, error) {
	name := filepath.Base(path)
	f, err := w.opt.create(path)
	if err != nil {
		return FileEntry{}, err
	}
	cw := newCountWriter(f)
	err = fill(cw)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return FileEntry{}, fmt.Errorf("writing %s: %w", name, err)
	}
	if w.opt.afterFile != nil {
		w.opt.afterFile(name)
	}
	return cw.entry(name), nil
}

func randHex() string {
	var b [4]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
