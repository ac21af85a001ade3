package checkpoint

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"slices"
)

// Manifest is manifest.json: the identity of the checkpoint and every other
// file in it with its size and sha256.
type Manifest struct {
	Format int         `json:"format"`
	Run    string      `json:"run"`
	Step   int64       `json:"step"`
	Files  []FileEntry `json:"files"`
}

// FileEntry is one file of a checkpoint.
type FileEntry struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// dataFiles are the files every checkpoint holds besides the manifest, in
// the order they are written and verified.
var dataFiles = []string{StateFile, ModelFile, OptimFile, ResidualsFile}

// optionalFiles are the files a checkpoint may hold besides dataFiles.
var optionalFiles = []string{TokenizerFile}

// decodeManifest parses manifest.json strictly.
func decodeManifest(b []byte) (*Manifest, error) {
	if len(b) > maxStateFile {
		return nil, fmt.Errorf("%d bytes, more than the %d allowed", len(b), maxStateFile)
	}
	var m Manifest
	if err := strictUnmarshal(b, &m); err != nil {
		return nil, err
	}
	if m.Format != Format {
		return nil, fmt.Errorf("format %d, this software reads format %d", m.Format, Format)
	}
	if m.Run == "" {
		return nil, errors.New("run identity is empty")
	}
	if m.Step < 0 {
		return nil, fmt.Errorf("step %d is negative", m.Step)
	}
	var names []string
	for _, f := range m.Files {
		if !slices.Contains(dataFiles, f.Name) && !slices.Contains(optionalFiles, f.Name) {
			return nil, fmt.Errorf("lists unknown file %q", f.Name)
		}
		if slices.Contains(names, f.Name) {
			return nil, fmt.Errorf("lists %s twice", f.Name)
		}
		if f.Size < 0 {
			return nil, fmt.Errorf("%s: negative size %d", f.Name, f.Size)
		}
		if b, err := hex.DecodeString(f.SHA256); err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("%s: sha256 %q is not 64 hex digits", f.Name, f.SHA256)
		}
		names = append(names, f.Name)
	}
	for _, name := range dataFiles {
		if !slices.Contains(names, name) {
			return nil, fmt.Errorf("does not list %s", name)
		}
	}
	return &m, nil
}

// entry returns the manifest's entry for name; decodeManifest guarantees
// one for dataFiles.
func (m *Manifest) entry(name string) FileEntry {
	e, _ := m.lookup(name)
	return e
}

// lookup returns the manifest's entry for name, if it lists one.
func (m *Manifest) lookup(name string) (FileEntry, bool) {
	for _, f := range m.Files {
		if f.Name == name {
			return f, true
		}
	}
	return FileEntry{Name: name}, false
}

// countWriter hashes and counts what passes through it to w.
type countWriter struct {
	w io.Writer
	h hash.Hash
	n int64
}

func newCountWriter(w io.Writer) *countWriter { return &countWriter{w: w, h: sha256.New()} }

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.h.Write(p[:n])
	c.n += int64(n)
	return n, err
}

func (c *countWriter) entry(name string) FileEntry {
	return FileEntry{Name: name, Size: c.n, SHA256: hex.EncodeToString(c.h.Sum(nil))}
}

// encodeManifest returns manifest.json for m.
func encodeManifest(m *Manifest) ([]byte, error) {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
