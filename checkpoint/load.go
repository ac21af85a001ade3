package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
)

// Resume modes for Resolve; any other mode is the path of one checkpoint.
const (
	ResumeAuto  = "auto"
	ResumeNever = "never"
)

// Resolve picks the state a run starts from, for --resume mode in the
// checkpoint directory dir, after removing leftovers of interrupted saves:
//
//   - "auto" (or ""): the newest checkpoint that verifies. One that fails is
//     skipped with a warning naming the file and the mismatch. No checkpoint
//     at all means a fresh start; checkpoints none of which verifies is an
//     error, so that a damaged directory is never silently trained over.
//   - "never": a fresh start. A non-empty dir is refused unless force, in
//     which case the checkpoints in it are deleted.
//   - anything else: the path of one checkpoint, which must verify.
//
// A fresh start returns a nil State.
func Resolve(dir, mode string, force bool, log *slog.Logger) (*State, error) {
	log = logger(log)
	if _, err := Clean(dir, log); err != nil {
		return nil, err
	}
	switch mode {
	case "", ResumeAuto:
		cps, err := List(dir)
		if err != nil {
			return nil, err
		}
		for _, p := range incomplete(dir) {
			log.Warn("skipping checkpoint without a manifest", "path", p, "missing", ManifestFile)
		}
		for _, c := range cps {
			st, err := Load(c.Path)
			if err == nil {
				log.Info("resuming from checkpoint", "path", c.Path, "step", st.Step)
				return st, nil
			}
			log.Warn("skipping checkpoint that does not verify", "path", c.Path, "err", err)
		}
		if len(cps) > 0 {
			return nil, fmt.Errorf("checkpoint dir %s: none of its %d checkpoints verifies (see the warnings); use --resume PATH or --resume never --force", dir, len(cps))
		}
		log.Info("no checkpoint found, starting fresh", "dir", dir)
		return nil, nil
	case ResumeNever:
		return nil, startOver(dir, force, log)
	default:
		st, err := Load(mode)
		if err != nil {
			return nil, fmt.Errorf("--resume %s: %w", mode, err)
		}
		log.Info("resuming from checkpoint", "path", mode, "step", st.Step)
		return st, nil
	}
}

// startOver prepares dir for a fresh run.
func startOver(dir string, force bool, log *slog.Logger) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) || err == nil && len(ents) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checkpoint dir: %w", err)
	}
	if !force {
		var names []string
		for _, e := range ents[:min(len(ents), 3)] {
			names = append(names, e.Name())
		}
		return fmt.Errorf("checkpoint dir %s is not empty (%d entries: %s...): use --force to start over and delete its checkpoints, or --resume auto", dir, len(ents), strings.Join(names, ", "))
	}
	for _, e := range ents {
		if _, ok := parseStepDir(e.Name()); !ok || !e.IsDir() {
			continue
		}
		if err := remove(dir, e.Name()); err != nil {
			return fmt.Errorf("deleting old checkpoint: %w", err)
		}
		log.Warn("--force: deleted old checkpoint", "path", filepath.Join(dir, e.Name()))
	}
	return nil
}

// Load reads and verifies the checkpoint at path: the manifest, then every
// file against its size and sha256, then the decoded contents against the
// manifest's identity. Errors name the file and the mismatch.
func Load(path string) (*State, error) {
	st, err := load(path)
	if err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	return st, nil
}

func load(path string) (*State, error) {
	mb, err := readSmall(filepath.Join(path, ManifestFile))
	if err != nil {
		return nil, fileErr(ManifestFile, err)
	}
	m, err := decodeManifest(mb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ManifestFile, err)
	}
	if step, ok := parseStepDir(filepath.Base(path)); ok && step != m.Step {
		return nil, fmt.Errorf("%s: step %d, but the directory is %s", ManifestFile, m.Step, filepath.Base(path))
	}
	sb, err := readSmall(filepath.Join(path, StateFile))
	if err != nil {
		return nil, fileErr(StateFile, err)
	}
	e := m.entry(StateFile)
	if err := match(e, int64(len(sb)), sha(sb)); err != nil {
		if o, derr := decodeState(sb); derr == nil && (o.Run != m.Run || o.Step != m.Step) {
			return nil, fmt.Errorf("%s belongs to another checkpoint: it is for run %q step %d, but %s is run %q step %d",
				ManifestFile, m.Run, m.Step, StateFile, o.Run, o.Step)
		}
		return nil, err
	}
	st, err := decodeState(sb)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", StateFile, err)
	}
	if st.Run != m.Run || st.Step != m.Step {
		return nil, fmt.Errorf("%s is for run %q step %d, but %s is run %q step %d", ManifestFile, m.Run, m.Step, StateFile, st.Run, st.Step)
	}
	if st.TokenizerJSON, err = loadTokenizer(path, m, st.TokenizerSHA256); err != nil {
		return nil, err
	}
	var res []Tensor
	groups := []struct {
		name string
		dst  *[]Tensor
	}{{ModelFile, &st.Model}, {OptimFile, &st.Optim}, {ResidualsFile, &res}}
	// The files are read and hashed concurrently; errors are reported in
	// file order.
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() { *g.dst, errs[i] = loadTensors(filepath.Join(path, g.name), m.entry(g.name)) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, err
		}
	}
	switch {
	case len(res) == 1 && res[0].Name == residualsName && len(res[0].Shape) == 1:
		st.Residuals = res[0].Data
	case len(res) > 0:
		return nil, fmt.Errorf("%s: want one 1-D tensor %q, found %d tensors (the first %q, shape %v)",
			ResidualsFile, residualsName, len(res), res[0].Name, res[0].Shape)
	}
	st.Dir = path
	return st, nil
}

// loadTokenizer reads the tokenizer file a checkpoint carries, verified
// against its manifest entry and against the digest state.json records
// (want): nil when the manifest lists none.
func loadTokenizer(path string, m *Manifest, want string) ([]byte, error) {
	e, ok := m.lookup(TokenizerFile)
	switch {
	case !ok:
		return nil, nil
	case want == "":
		return nil, fmt.Errorf("%s lists %s, but %s records no tokenizer_sha256 (a tokenizer file that belongs to no run)", ManifestFile, TokenizerFile, StateFile)
	case e.SHA256 != want:
		return nil, fmt.Errorf("%s: the manifest lists sha256 %s, but %s records tokenizer sha256 %s", TokenizerFile, e.SHA256, StateFile, want)
	case e.Size > maxTokenizerFile:
		return nil, fmt.Errorf("%s: %d bytes, more than the %d allowed", TokenizerFile, e.Size, maxTokenizerFile)
	}
	p := filepath.Join(path, TokenizerFile)
	if err := regular(p); err != nil {
		return nil, fileErr(TokenizerFile, err)
	}
	f, err := os.Open(p)
	if err != nil {
		return nil, fileErr(TokenizerFile, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileErr(TokenizerFile, err)
	}
	if fi.Size() != e.Size {
		return nil, match(e, fi.Size(), "")
	}
	b, err := io.ReadAll(io.LimitReader(f, e.Size+1))
	if err != nil {
		return nil, fileErr(TokenizerFile, err)
	}
	if err := match(e, int64(len(b)), sha(b)); err != nil {
		return nil, fmt.Errorf("%w; the tokenizer the checkpoint carries is not the one it was trained with", err)
	}
	return b, nil
}

// loadTensors reads one safetensors file, hashing it on the way.
func loadTensors(path string, e FileEntry) ([]Tensor, error) {
	if err := regular(path); err != nil {
		return nil, fileErr(e.Name, err)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fileErr(e.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fileErr(e.Name, err)
	}
	if fi.Size() != e.Size {
		return nil, match(e, fi.Size(), "")
	}
	h := sha256.New()
	tee := io.TeeReader(f, h)
	ts, _, perr := readSafetensors(tee, fi.Size())
	if _, err := io.Copy(io.Discard, tee); err != nil { // hash what a parse error left unread
		return nil, fileErr(e.Name, err)
	}
	if err := match(e, fi.Size(), hex.EncodeToString(h.Sum(nil))); err != nil {
		return nil, err
	}
	if perr != nil {
		return nil, fmt.Errorf("%s: %w", e.Name, perr)
	}
	return ts, nil
}

// match compares a file's size and sha256 (skipped when empty) with its
// manifest entry.
func match(e FileEntry, size int64, sum string) error {
	if size != e.Size {
		return fmt.Errorf("%s: %d bytes, the manifest says %d (truncated or replaced)", e.Name, size, e.Size)
	}
	if sum != "" && sum != e.SHA256 {
		return fmt.Errorf("%s: sha256 %.12s…, the manifest says %.12s… (contents damaged)", e.Name, sum, e.SHA256)
	}
	return nil
}

func fileErr(name string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("%s: missing", name)
	}
	return fmt.Errorf("%s: %w", name, err)
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
