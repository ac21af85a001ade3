package dataset

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"github.com/difftrain/difftrain/shard"
	"github.com/difftrain/difftrain/tokenizer"
)

// TokenizerCopy is the name of the copy of a Hugging Face tokenizer file
// that Prepare writes beside the shards.
const TokenizerCopy = tokenizer.FileName

// FileTokenizer is a tokenizer that comes from a file, which goes with the
// dataset (a copy beside the shards, its sha256 in the manifest).
type FileTokenizer interface {
	Tokenizer
	File() []byte   // the tokenizer.json
	SHA256() string // hex digest of File
}

// LoadTokenizer loads a Hugging Face tokenizer.json (or a directory holding
// one) for Prepare. Its ids 0-3 must be special tokens, as the packing and
// the diffusion rely on BOS, EOS, PAD and MASK there (gidd-spec.md §8.1).
func LoadTokenizer(path string) (FileTokenizer, error) {
	t, err := tokenizer.Load(path)
	if err != nil {
		return nil, err
	}
	for id := range int32(4) {
		if !t.Special(id) {
			return nil, fmt.Errorf("tokenizer %s: id %d is %q, not a special token: ids 0-3 must be BOS, EOS, PAD, MASK (gidd-spec.md §8.1; `trainer tokenizer train` writes that layout)",
				path, id, t.Token(id))
		}
	}
	return t, nil
}

// writeTokenizerCopy writes the tokenizer file beside the shards (through a
// temporary file) and records it in the manifest. Other tokenizers need
// nothing.
func writeTokenizerCopy(dir string, t Tokenizer, m *shard.Manifest) error {
	ft, ok := t.(FileTokenizer)
	if !ok {
		return nil
	}
	tmp := filepath.Join(dir, "."+TokenizerCopy+".tmp")
	if err := os.WriteFile(tmp, ft.File(), 0o644); err != nil {
		return fmt.Errorf("tokenizer copy: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, TokenizerCopy)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("tokenizer copy: %w", err)
	}
	m.TokenizerFile, m.TokenizerSHA256 = TokenizerCopy, ft.SHA256()
	return nil
}

// ManifestTokenizer returns the tokenizer of the dataset in dir: the copy
// its manifest names, checked against the recorded sha256 and name, or a
// built-in tokenizer by name.
func ManifestTokenizer(dir string, m *shard.Manifest) (Tokenizer, error) {
	if m.TokenizerFile == "" {
		return TokenizerByName(m.Tokenizer)
	}
	if filepath.Base(m.TokenizerFile) != m.TokenizerFile {
		return nil, fmt.Errorf("manifest: tokenizer file %q is not a plain name", m.TokenizerFile)
	}
	path := filepath.Join(dir, m.TokenizerFile)
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dataset tokenizer: %w", err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != m.TokenizerSHA256 {
		return nil, fmt.Errorf("dataset tokenizer %s: sha256 %x, the manifest records %s", path, sum, m.TokenizerSHA256)
	}
	t, err := tokenizer.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("dataset tokenizer %s: %w", path, err)
	}
	if t.Name() != m.Tokenizer || t.Vocab() != m.Vocab {
		return nil, fmt.Errorf("dataset tokenizer %s: %s with %d ids, the manifest records %s with %d", path, t.Name(), t.Vocab(), m.Tokenizer, m.Vocab)
	}
	return t, nil
}

// tokenizerCache holds what Loader.TokenizerJSON read, once.
type tokenizerCache struct {
	once sync.Once
	data []byte
}

// Tokenizer returns the tokenizer of the loader's dataset (see
// ManifestTokenizer): for a dataset with a tokenizer file, the copy in the
// dataset (or cache) directory.
func (l *Loader) Tokenizer() (Tokenizer, error) {
	return ManifestTokenizer(l.dir, l.man)
}

// TokenizerJSON returns the dataset's tokenizer file, checked against the
// manifest's sha256, for checkpoints to carry: nil for a built-in tokenizer,
// and nil, with a warning once, when this node has no good copy (a dataset
// copied from a peer or URL brings its manifest and shards, not the
// tokenizer file). It reads the file once.
func (l *Loader) TokenizerJSON() []byte {
	l.tok.once.Do(func() {
		if l.man.TokenizerFile == "" {
			return
		}
		t, err := ManifestTokenizer(l.dir, l.man)
		if err != nil {
			slog.Warn("dataset: no usable copy of the tokenizer file; checkpoints record its sha256 only", "sha256", l.man.TokenizerSHA256, "err", err)
			return
		}
		l.tok.data = t.(FileTokenizer).File()
	})
	return l.tok.data
}

// CheckpointTokenizer returns the tokenizer a checkpoint was trained with:
// the file it carries (file, with its recorded sha256), else the tokenizer
// of dataset dir (empty: none) checked against the recorded sha256 or, for
// checkpoints older than carried tokenizers, the recorded name; else the
// built-in tokenizer of that name.
func CheckpointTokenizer(name string, file []byte, sum, dir string) (Tokenizer, error) {
	if len(file) > 0 {
		t, err := tokenizer.Parse(file)
		if err != nil {
			return nil, fmt.Errorf("the checkpoint's tokenizer.json: %w", err)
		}
		if t.SHA256() != sum || t.Name() != name {
			return nil, fmt.Errorf("the checkpoint's tokenizer.json is %s (sha256 %s), the checkpoint records %s (sha256 %s)", t.Name(), t.SHA256(), name, sum)
		}
		return t, nil
	}
	if t, err := TokenizerByName(name); err == nil {
		return t, nil
	}
	if dir == "" {
		return nil, fmt.Errorf("the checkpoint carries no tokenizer file and its tokenizer %s is not built in: pass the dataset it was trained on (--data)", name)
	}
	m, err := shard.ReadManifest(dir)
	if err != nil {
		return nil, err
	}
	t, err := ManifestTokenizer(dir, m)
	if err != nil {
		return nil, err
	}
	if sum != "" && m.TokenizerSHA256 != sum || t.Name() != name {
		return nil, fmt.Errorf("dataset %s has tokenizer %s (sha256 %s), the checkpoint was trained with %s (sha256 %s)", dir, t.Name(), m.TokenizerSHA256, name, cmp.Or(sum, "not recorded"))
	}
	return t, nil
}

// fetchTokenizer copies the dataset's tokenizer file into a cache of a
// remote dataset, so that this node's checkpoints carry it and its Flight
// server serves it, unless a verified copy is there already. A peer that
// cannot send it costs only that (a warning): the digest still travels.
func fetchTokenizer(ctx context.Context, f shard.Fetcher, m *shard.Manifest, dir string) {
	tf, ok := f.(interface {
		FetchTokenizer(context.Context, *shard.Manifest, string) error
	})
	if !ok || m.TokenizerFile == "" {
		return
	}
	if _, err := ManifestTokenizer(dir, m); err == nil {
		return
	}
	if err := tf.FetchTokenizer(ctx, m, dir); err != nil {
		slog.Warn("dataset: could not copy the tokenizer file from the source", "file", m.TokenizerFile, "err", err)
	}
}
