package checkpoint

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"unicode/utf8"
)

// The safetensors format (https://github.com/huggingface/safetensors):
//
//	8 bytes   N, little-endian uint64: the length of the header
//	N bytes   JSON object: tensor name -> {"dtype", "shape", "data_offsets"},
//	          plus an optional "__metadata__" string -> string map
//	rest      the data; data_offsets [begin, end) are relative to its start
//
// This codec reads and writes dtype F32 only. The reader is strict: the data
// section must be covered by the tensors exactly, without holes or overlap,
// and every size must agree with the file size.

const (
	maxHeader = 100 << 20 // the limit the reference implementation uses
	metaKey   = "__metadata__"
)

// Tensor is one named float32 tensor; Data holds the product of Shape values
// in row-major order (an empty Shape is a scalar).
type Tensor struct {
	Name  string
	Shape []int
	Data  []float32
}

type tensorHeader struct {
	Dtype       *string  `json:"dtype"`
	Shape       *[]int64 `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// checkTensors reports the first tensor of ts that cannot be written.
func checkTensors(ts []Tensor) error {
	seen := make(map[string]bool, len(ts))
	for i, t := range ts {
		switch {
		case t.Name == "":
			return fmt.Errorf("tensor %d has no name", i)
		case t.Name == metaKey:
			return fmt.Errorf("tensor %d: the name %q is reserved", i, t.Name)
		case !utf8.ValidString(t.Name):
			return fmt.Errorf("tensor %d: name %q is not valid UTF-8", i, t.Name)
		case seen[t.Name]:
			return fmt.Errorf("tensor %q appears twice", t.Name)
		}
		seen[t.Name] = true
		n := int64(1)
		for _, s := range t.Shape {
			if s < 0 {
				return fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
			}
			if s > 0 && n > math.MaxInt64/int64(s) {
				return fmt.Errorf("tensor %q: shape %v is too large", t.Name, t.Shape)
			}
			n *= int64(s)
		}
		if n != int64(len(t.Data)) {
			return fmt.Errorf("tensor %q: shape %v holds %d values but it has %d", t.Name, t.Shape, n, len(t.Data))
		}
	}
	return nil
}

// safetensorsHeader returns the 8-byte length and the JSON header for ts,
// padded with spaces so that the data starts 8-byte aligned.
func safetensorsHeader(ts []Tensor, meta map[string]string) ([]byte, error) {
	if err := checkTensors(ts); err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.Write(make([]byte, 8))
	b.WriteByte('{')
	if len(meta) > 0 {
		m, err := json.Marshal(meta)
		if err != nil {
			return nil, fmt.Errorf("metadata: %w", err)
		}
		fmt.Fprintf(&b, "%q:%s", metaKey, m)
	}
	off := int64(0)
	for i, t := range ts {
		if i > 0 || len(meta) > 0 {
			b.WriteByte(',')
		}
		name, _ := json.Marshal(t.Name)
		shape := t.Shape
		if shape == nil {
			shape = []int{}
		}
		sh, _ := json.Marshal(shape)
		end := off + 4*int64(len(t.Data))
		fmt.Fprintf(&b, `%s:{"dtype":"F32","shape":%s,"data_offsets":[%d,%d]}`, name, sh, off, end)
		off = end
	}
	b.WriteByte('}')
	for b.Len()%8 != 0 {
		b.WriteByte(' ')
	}
	out := b.Bytes()
	binary.LittleEndian.PutUint64(out, uint64(len(out)-8))
	return out, nil
}

// writeSafetensors writes ts and meta to w in safetensors format.
func writeSafetensors(w io.Writer, ts []Tensor, meta map[string]string) error {
	h, err := safetensorsHeader(ts, meta)
	if err != nil {
		return err
	}
	if _, err := w.Write(h); err != nil {
		return err
	}
	for _, t := range ts {
		if err := writeFloats(w, t.Data); err != nil {
			return err
		}
	}
	return nil
}

// readSafetensors decodes a safetensors stream of exactly size bytes. The
// tensors come back in file order, as views into one buffer for the whole data
// section.
func readSafetensors(r io.Reader, size int64) ([]Tensor, map[string]string, error) {
	if size < 8 {
		return nil, nil, fmt.Errorf("file is %d bytes, shorter than the 8-byte header length", size)
	}
	var lenBuf [8]byte
	if _, err := io.ReadFull(r, lenBuf[:]); err != nil {
		return nil, nil, fmt.Errorf("reading header length: %w", err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n < 2 || n > maxHeader || n > uint64(size-8) {
		return nil, nil, fmt.Errorf("header length %d is invalid for a %d-byte file (limit %d)", n, size, maxHeader)
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(r, hdr); err != nil {
		return nil, nil, fmt.Errorf("reading %d-byte header: %w", n, err)
	}
	dataLen := size - 8 - int64(n)
	entries, meta, err := parseHeader(hdr, dataLen)
	if err != nil {
		return nil, nil, fmt.Errorf("header: %w", err)
	}
	flat := make([]float32, dataLen/4)
	if err := readFloats(r, flat); err != nil {
		return nil, nil, fmt.Errorf("reading %d data bytes: %w", dataLen, err)
	}
	var ts []Tensor
	for _, e := range entries {
		lo, hi := e.begin/4, e.end/4
		ts = append(ts, Tensor{Name: e.name, Shape: e.shape, Data: flat[lo:hi:hi]})
	}
	return ts, meta, nil
}

// headerEntry is one tensor of a safetensors header; begin and end are byte
// offsets into the data section.
type headerEntry struct {
	name       string
	shape      []int
	begin, end int64
}

// parseHeader validates a safetensors header for a data section of dataLen
// bytes and returns its tensors in data order.
func parseHeader(hdr []byte, dataLen int64) ([]headerEntry, map[string]string, error) {
	if !utf8.Valid(hdr) {
		return nil, nil, errors.New("not valid UTF-8")
	}
	if hdr[0] != '{' {
		return nil, nil, errors.New("does not start with '{'")
	}
	dec := json.NewDecoder(bytes.NewReader(hdr))
	if _, err := dec.Token(); err != nil {
		return nil, nil, err
	}
	var (
		entries []headerEntry
		meta    map[string]string
		seen    = map[string]bool{}
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, nil, err
		}
		name, _ := tok.(string)
		if seen[name] {
			return nil, nil, fmt.Errorf("key %q appears twice", name)
		}
		seen[name] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, nil, fmt.Errorf("key %q: %w", name, err)
		}
		if name == metaKey {
			if err := json.Unmarshal(raw, &meta); err != nil {
				return nil, nil, fmt.Errorf("%s: want a map of strings: %w", metaKey, err)
			}
			continue
		}
		if name == "" {
			return nil, nil, errors.New("a tensor has an empty name")
		}
		e, err := parseEntry(raw, dataLen)
		if err != nil {
			return nil, nil, fmt.Errorf("tensor %q: %w", name, err)
		}
		e.name = name
		entries = append(entries, e)
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, nil, err
	}
	if rest := strings.TrimLeft(string(hdr[dec.InputOffset():]), " \t\r\n"); rest != "" {
		return nil, nil, fmt.Errorf("%d unexpected bytes after the JSON object", len(rest))
	}
	slices.SortStableFunc(entries, func(a, b headerEntry) int {
		if c := cmp.Compare(a.begin, b.begin); c != 0 {
			return c
		}
		return cmp.Compare(a.end, b.end)
	})
	pos := int64(0)
	for _, e := range entries {
		if e.begin < pos {
			return nil, nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] overlap the previous tensor", e.name, e.begin, e.end)
		}
		if e.begin > pos {
			return nil, nil, fmt.Errorf("tensor %q: data_offsets [%d, %d] leave a hole at byte %d", e.name, e.begin, e.end, pos)
		}
		pos = e.end
	}
	if pos != dataLen {
		return nil, nil, fmt.Errorf("tensors cover %d data bytes but the file holds %d", pos, dataLen)
	}
	return entries, meta, nil
}

// parseEntry validates one tensor entry.
func parseEntry(raw json.RawMessage, dataLen int64) (headerEntry, error) {
	var h tensorHeader
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return headerEntry{}, err
	}
	switch {
	case h.Dtype == nil || h.Shape == nil || h.DataOffsets == nil:
		return headerEntry{}, errors.New("needs dtype, shape and data_offsets")
	case *h.Dtype != "F32":
		return headerEntry{}, fmt.Errorf("dtype %q is not supported (want F32)", *h.Dtype)
	case len(*h.DataOffsets) != 2:
		return headerEntry{}, fmt.Errorf("data_offsets has %d values, want 2", len(*h.DataOffsets))
	}
	begin, end := (*h.DataOffsets)[0], (*h.DataOffsets)[1]
	if begin < 0 || end < begin || end > dataLen {
		return headerEntry{}, fmt.Errorf("data_offsets [%d, %d] outside the %d-byte data section", begin, end, dataLen)
	}
	if begin%4 != 0 || end%4 != 0 {
		return headerEntry{}, fmt.Errorf("data_offsets [%d, %d] are not multiples of 4", begin, end)
	}
	shape := make([]int, len(*h.Shape))
	n := int64(1)
	for i, s := range *h.Shape {
		if s < 0 {
			return headerEntry{}, fmt.Errorf("negative dimension in shape %v", *h.Shape)
		}
		if s > 0 && n > dataLen/s {
			return headerEntry{}, fmt.Errorf("shape %v is larger than the file", *h.Shape)
		}
		n *= s
		shape[i] = int(s)
	}
	if 4*n != end-begin {
		return headerEntry{}, fmt.Errorf("shape %v needs %d bytes but data_offsets [%d, %d] span %d", *h.Shape, 4*n, begin, end, end-begin)
	}
	return headerEntry{shape: shape, begin: begin, end: end}, nil
}
