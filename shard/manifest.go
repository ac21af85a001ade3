package shard

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
)

// ManifestName is the file name of a dataset's manifest, beside its shards.
const ManifestName = "manifest.json"

// Manifest describes a dataset: its shards, in order, and what their tokens
// mean. The sequences of a split are numbered across its shards in manifest
// order.
type Manifest struct {
	Version   int    `json:"version"`
	Tokenizer string `json:"tokenizer"`
	// TokenizerFile names a copy of the tokenizer file beside the shards
	// and TokenizerSHA256 its hex digest; empty for built-in tokenizers.
	TokenizerFile   string `json:"tokenizer_file,omitempty"`
	TokenizerSHA256 string `json:"tokenizer_sha256,omitempty"`
	Vocab           int    `json:"vocab"`
	SeqLen          int    `json:"seq_len"`
	Shards          []Info `json:"shards"`
	// Source records how the dataset was made (input, flags); informational.
	Source map[string]string `json:"source,omitempty"`
}

// Info describes one shard file.
type Info struct {
	Name      string `json:"name"`      // file name, relative to the dataset
	Split     string `json:"split"`     // "train", "val", ...
	Sequences int64  `json:"sequences"` // rows
	Bytes     int64  `json:"bytes"`     // file size
	SHA256    string `json:"sha256"`    // hex digest of the file
}

var (
	nameRE  = regexp.MustCompile(`^[A-Za-z0-9_-][A-Za-z0-9._-]*\.arrow$`)
	splitRE = regexp.MustCompile(`^[a-z][a-z0-9_-]*$`)
)

// maxManifest bounds the size of a manifest this package parses.
const maxManifest = 64 << 20

// ParseManifest decodes and validates a manifest.
func ParseManifest(data []byte) (*Manifest, error) {
	if len(data) > maxManifest {
		return nil, fmt.Errorf("manifest: %d bytes, more than the %d allowed", len(data), maxManifest)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	if dec.More() {
		return nil, errors.New("manifest: trailing data after the JSON object")
	}
	if err := m.Validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

// Validate checks the manifest's fields and the consistency of its shards.
func (m *Manifest) Validate() error {
	if m.Version != Version {
		return fmt.Errorf("manifest: format version %d, this build reads version %d", m.Version, Version)
	}
	meta := Meta{SeqLen: m.SeqLen, Vocab: m.Vocab, Tokenizer: m.Tokenizer, BatchRows: 1}
	if err := meta.Validate(); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	seen := make(map[string]bool, len(m.Shards))
	for i, s := range m.Shards {
		switch {
		case !nameRE.MatchString(s.Name):
			return fmt.Errorf("manifest: shard %d: bad file name %q (want a plain name ending in .arrow)", i, s.Name)
		case seen[s.Name]:
			return fmt.Errorf("manifest: shard %s listed twice", s.Name)
		case !splitRE.MatchString(s.Split):
			return fmt.Errorf("manifest: shard %s: bad split name %q", s.Name, s.Split)
		case s.Sequences <= 0:
			return fmt.Errorf("manifest: shard %s: %d sequences", s.Name, s.Sequences)
		case s.Bytes <= 0:
			return fmt.Errorf("manifest: shard %s: %d bytes", s.Name, s.Bytes)
		case s.Sequences > s.Bytes/int64(m.SeqLen*meta.TokenBytes()):
			return fmt.Errorf("manifest: shard %s: %d sequences cannot fit in %d bytes", s.Name, s.Sequences, s.Bytes)
		}
		if b, err := hex.DecodeString(s.SHA256); err != nil || len(b) != 32 {
			return fmt.Errorf("manifest: shard %s: sha256 %q is not 64 hex digits", s.Name, s.SHA256)
		}
		seen[s.Name] = true
	}
	return nil
}

// Split returns the shards of one split, in manifest order.
func (m *Manifest) Split(split string) []Info {
	var out []Info
	for _, s := range m.Shards {
		if s.Split == split {
			out = append(out, s)
		}
	}
	return out
}

// Meta returns the shard metadata the manifest implies (BatchRows unknown: 0).
func (m *Manifest) Meta() Meta {
	return Meta{SeqLen: m.SeqLen, Vocab: m.Vocab, Tokenizer: m.Tokenizer}
}

// Marshal encodes the manifest as indented JSON.
func (m *Manifest) Marshal() ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	return append(b, '\n'), nil
}

// ReadManifest reads and validates dir/manifest.json.
func ReadManifest(dir string) (*Manifest, error) {
	p := filepath.Join(dir, ManifestName)
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", p, err)
	}
	m, err := ParseManifest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return m, nil
}

// WriteManifest validates m and writes it to dir/manifest.json atomically.
func WriteManifest(dir string, m *Manifest) error {
	if err := m.Validate(); err != nil {
		return err
	}
	b, err := m.Marshal()
	if err != nil {
		return err
	}
	return WriteFileAtomic(filepath.Join(dir, ManifestName), b)
}

// WriteFileAtomic writes data to path through a temporary file in the same
// directory, fsyncs it, renames it into place and fsyncs the directory, so a
// crash leaves either the old file or the new one, never a torn one.
func WriteFileAtomic(path string, data []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

// syncDir fsyncs a directory so that a rename in it is durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
