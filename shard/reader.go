package shard

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
)

// Expect is what a shard must match when opened; zero fields are not checked.
type Expect struct {
	SeqLen    int
	Vocab     int
	Tokenizer string
	Sequences int64
	Bytes     int64
	SHA256    string
}

// Expect returns what the manifest says about one of its shards.
func (m *Manifest) Expect(s Info) Expect {
	return Expect{SeqLen: m.SeqLen, Vocab: m.Vocab, Tokenizer: m.Tokenizer, Sequences: s.Sequences, Bytes: s.Bytes, SHA256: s.SHA256}
}

// Reader gives random access to the sequences of one shard. A Reader is
// safe for concurrent use.
type Reader struct {
	name  string
	meta  Meta
	n     int64
	recs  []arrow.RecordBatch
	u16   [][]uint16 // per record batch, when TokenBytes() == 2
	i32   [][]int32  // per record batch, when TokenBytes() == 4
	unmap func() error

	mu     sync.RWMutex
	closed bool
}

// Open memory-maps the shard at path and validates it against want: size,
// checksum, schema and metadata, row counts, and every token id < Vocab.
func Open(path string, want Expect) (*Reader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	size := st.Size()
	if want.Bytes > 0 && size != want.Bytes {
		return nil, fmt.Errorf("shard %s: %d bytes, manifest says %d (truncated or replaced?)", path, size, want.Bytes)
	}
	if size < 16 || size > 1<<40 {
		return nil, fmt.Errorf("shard %s: %d bytes is not an Arrow file", path, size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("shard %s: mmap: %w", path, err)
	}
	r, err := decode(path, data, want)
	if err != nil {
		syscall.Munmap(data)
		return nil, err
	}
	r.unmap = func() error { return syscall.Munmap(data) }
	return r, nil
}

// FromBytes validates an in-memory shard like Open does. The Reader
// references data, which must not change while it is in use.
func FromBytes(name string, data []byte, want Expect) (*Reader, error) {
	return decode(name, data, want)
}

func decode(name string, data []byte, want Expect) (r *Reader, err error) {
	if want.Bytes > 0 && int64(len(data)) != want.Bytes {
		return nil, fmt.Errorf("shard %s: %d bytes, manifest says %d (truncated or replaced?)", name, len(data), want.Bytes)
	}
	if want.SHA256 != "" {
		sum := sha256.Sum256(data)
		if got := hex.EncodeToString(sum[:]); got != want.SHA256 {
			return nil, fmt.Errorf("shard %s: checksum mismatch: sha256 %s, manifest says %s", name, got, want.SHA256)
		}
	}
	r = &Reader{name: name}
	defer func() {
		// The Arrow decoder may panic on malformed flatbuffers.
		if p := recover(); p != nil {
			r.release()
			r, err = nil, fmt.Errorf("shard %s: malformed Arrow file: %v", name, p)
		}
	}()
	if err := precheck(data); err != nil {
		return nil, fmt.Errorf("shard %s: not a valid shard file: %w", name, err)
	}
	fr, err := ipc.NewMappedFileReader(data)
	if err != nil {
		return nil, fmt.Errorf("shard %s: not a valid Arrow IPC file: %w", name, err)
	}
	defer fr.Close()
	if r.meta, err = metaFromSchema(fr.Schema()); err != nil {
		return nil, fmt.Errorf("shard %s: %w", name, err)
	}
	if err := r.meta.matches(want); err != nil {
		return nil, fmt.Errorf("shard %s: %w", name, err)
	}
	nb := fr.NumRecords()
	if nb == 0 {
		return nil, fmt.Errorf("shard %s: no record batches", name)
	}
	for i := range nb {
		rec, err := fr.RecordBatchAt(i)
		if err != nil {
			r.release()
			return nil, fmt.Errorf("shard %s: record batch %d: %w", name, i, err)
		}
		r.recs = append(r.recs, rec)
		if err := r.addBatch(i, nb, rec); err != nil {
			r.release()
			return nil, fmt.Errorf("shard %s: record batch %d: %w", name, i, err)
		}
	}
	if want.Sequences > 0 && r.n != want.Sequences {
		r.release()
		return nil, fmt.Errorf("shard %s: %d sequences, manifest says %d", name, r.n, want.Sequences)
	}
	return r, nil
}

func (m Meta) matches(want Expect) error {
	switch {
	case want.SeqLen > 0 && m.SeqLen != want.SeqLen:
		return fmt.Errorf("sequence length %d, manifest says %d", m.SeqLen, want.SeqLen)
	case want.Vocab > 0 && m.Vocab != want.Vocab:
		return fmt.Errorf("vocabulary size %d, manifest says %d", m.Vocab, want.Vocab)
	case want.Tokenizer != "" && m.Tokenizer != want.Tokenizer:
		return fmt.Errorf("tokenizer %q, manifest says %q", m.Tokenizer, want.Tokenizer)
	}
	return nil
}

// addBatch checks record batch i of nb and records its token slice.
func (r *Reader) addBatch(i, nb int, rec arrow.RecordBatch) error {
	rows := int(rec.NumRows())
	full := r.meta.BatchRows
	if rows <= 0 || rows > full || (i < nb-1 && rows != full) {
		return fmt.Errorf("%d rows; every batch but the last must hold %d, the last 1 to %d", rows, full, full)
	}
	if rec.NumCols() != 1 {
		return fmt.Errorf("%d columns, want 1", rec.NumCols())
	}
	col, ok := rec.Column(0).(*array.FixedSizeList)
	if !ok || col.Len() != rows {
		return errors.New("column is not a fixed-size list of the batch's length")
	}
	if col.NullN() != 0 {
		return fmt.Errorf("%d null sequences", col.NullN())
	}
	want := rows * r.meta.SeqLen
	vals := col.ListValues()
	if vals.NullN() != 0 {
		return fmt.Errorf("%d null token ids", vals.NullN())
	}
	if col.Data().Offset() != 0 || vals.Len() != want {
		return fmt.Errorf("%d token ids for %d sequences of %d", vals.Len(), rows, r.meta.SeqLen)
	}
	vocab := r.meta.Vocab
	switch v := vals.(type) {
	case *array.Uint16:
		ids := v.Uint16Values()
		if len(ids) != want {
			return fmt.Errorf("%d token ids for %d sequences of %d", len(ids), rows, r.meta.SeqLen)
		}
		for j, t := range ids {
			if int(t) >= vocab {
				return fmt.Errorf("sequence %d: token id %d at position %d is not < vocabulary size %d",
					r.n+int64(j/r.meta.SeqLen), t, j%r.meta.SeqLen, vocab)
			}
		}
		r.u16 = append(r.u16, ids)
	case *array.Int32:
		ids := v.Int32Values()
		if len(ids) != want {
			return fmt.Errorf("%d token ids for %d sequences of %d", len(ids), rows, r.meta.SeqLen)
		}
		for j, t := range ids {
			if t < 0 || int(t) >= vocab {
				return fmt.Errorf("sequence %d: token id %d at position %d is outside [0, %d)",
					r.n+int64(j/r.meta.SeqLen), t, j%r.meta.SeqLen, vocab)
			}
		}
		r.i32 = append(r.i32, ids)
	default:
		return fmt.Errorf("token ids of type %s", vals.DataType())
	}
	r.n += int64(rows)
	return nil
}

// Name returns the path or name the shard was opened under.
func (r *Reader) Name() string { return r.name }

// Meta returns the shard's metadata.
func (r *Reader) Meta() Meta { return r.meta }

// Len returns the number of sequences in the shard.
func (r *Reader) Len() int64 { return r.n }

// Read copies the tokens of sequence i into dst, which must hold SeqLen.
func (r *Reader) Read(i int64, dst []int32) error {
	n := r.meta.SeqLen
	if i < 0 || i >= r.n {
		return fmt.Errorf("shard %s: sequence %d out of range [0, %d)", r.name, i, r.n)
	}
	if len(dst) != n {
		return fmt.Errorf("shard %s: destination holds %d tokens, want %d", r.name, len(dst), n)
	}
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return fmt.Errorf("shard %s: read after close", r.name)
	}
	r.readAt(i, dst)
	return nil
}

// readAt copies sequence i, which must be in range, into dst.
func (r *Reader) readAt(i int64, dst []int32) {
	n := r.meta.SeqLen
	b, o := i/int64(r.meta.BatchRows), int(i%int64(r.meta.BatchRows))*n
	if r.u16 != nil {
		for j, t := range r.u16[b][o : o+n] {
			dst[j] = int32(t)
		}
	} else {
		copy(dst, r.i32[b][o:o+n])
	}
}

// batch returns record batch b (for streaming); the caller must not use it
// after Close.
func (r *Reader) batch(b int) arrow.RecordBatch { return r.recs[b] }

// Close releases the shard's memory map. Reads after Close fail.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	r.release()
	if r.unmap != nil {
		return r.unmap()
	}
	return nil
}

func (r *Reader) release() {
	for _, rec := range r.recs {
		rec.Release()
	}
	r.recs, r.u16, r.i32 = nil, nil, nil
}
