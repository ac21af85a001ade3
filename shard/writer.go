package shard

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// Writer writes one shard. Sequences go to a temporary file beside the
// destination; Close fsyncs it and renames it into place, so no reader ever
// sees a partly written shard under the final name.
type Writer struct {
	path string
	meta Meta
	f    *os.File
	bw   *bufio.Writer
	sum  hash.Hash
	n    int64 // bytes written
	aw   *ipc.FileWriter

	buf  []byte // tokens of the pending record batch
	rows int    // rows in buf
	seqs int64  // rows written in total
	done bool
}

// Create starts a shard that Close will place at path.
func Create(path string, meta Meta) (*Writer, error) {
	if err := meta.Validate(); err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	if !nameRE.MatchString(filepath.Base(path)) {
		return nil, fmt.Errorf("shard %s: bad file name (want a plain name ending in .arrow)", path)
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	w := &Writer{path: path, meta: meta, f: f, sum: sha256.New()}
	w.bw = bufio.NewWriterSize(io.MultiWriter(f, w.sum, (*counter)(&w.n)), 1<<20)
	w.aw, err = ipc.NewFileWriter(w.bw, ipc.WithSchema(meta.Schema()), ipc.WithAllocator(memory.DefaultAllocator))
	if err != nil {
		w.Abort()
		return nil, fmt.Errorf("shard %s: %w", path, err)
	}
	w.buf = make([]byte, 0, meta.BatchRows*meta.SeqLen*meta.TokenBytes())
	return w, nil
}

type counter int64

func (c *counter) Write(p []byte) (int, error) { *c += counter(len(p)); return len(p), nil }

// Len returns the number of sequences added so far.
func (w *Writer) Len() int64 { return w.seqs + int64(w.rows) }

// Add appends one sequence of exactly SeqLen token ids, each in [0, Vocab).
func (w *Writer) Add(seq []int32) error {
	if w.done {
		return fmt.Errorf("shard %s: write after close", w.path)
	}
	if len(seq) != w.meta.SeqLen {
		return fmt.Errorf("shard %s: sequence of %d tokens, want %d", w.path, len(seq), w.meta.SeqLen)
	}
	vocab := uint32(w.meta.Vocab)
	o := len(w.buf)
	if w.meta.TokenBytes() == 2 {
		w.buf = w.buf[:o+2*len(seq)]
		for i, t := range seq {
			if uint32(t) >= vocab {
				w.buf = w.buf[:o]
				return w.badToken(seq, i)
			}
			binary.LittleEndian.PutUint16(w.buf[o+2*i:], uint16(t))
		}
	} else {
		w.buf = w.buf[:o+4*len(seq)]
		for i, t := range seq {
			if uint32(t) >= vocab {
				w.buf = w.buf[:o]
				return w.badToken(seq, i)
			}
			binary.LittleEndian.PutUint32(w.buf[o+4*i:], uint32(t))
		}
	}
	w.rows++
	if w.rows == w.meta.BatchRows {
		return w.flush()
	}
	return nil
}

func (w *Writer) badToken(seq []int32, i int) error {
	return fmt.Errorf("shard %s: sequence %d: token %d at position %d outside [0, %d)", w.path, w.Len(), seq[i], i, w.meta.Vocab)
}

// flush writes the pending rows as one record batch.
func (w *Writer) flush() error {
	if w.rows == 0 {
		return nil
	}
	rec := w.meta.record(w.rows, w.buf)
	err := w.aw.Write(rec)
	rec.Release()
	if err != nil {
		return fmt.Errorf("shard %s: write record batch: %w", w.path, err)
	}
	w.seqs += int64(w.rows)
	w.rows = 0
	w.buf = w.buf[:0]
	return nil
}

// record wraps rows sequences of little-endian token ids in buf as a
// record batch of m's schema (no copy).
func (m Meta) record(rows int, buf []byte) arrow.RecordBatch {
	child := array.NewData(m.elemType(), rows*m.SeqLen, []*memory.Buffer{nil, memory.NewBufferBytes(buf)}, nil, 0, 0)
	defer child.Release()
	list := array.NewData(m.Schema().Field(0).Type, rows, []*memory.Buffer{nil}, []arrow.ArrayData{child}, 0, 0)
	defer list.Release()
	col := array.MakeFromData(list)
	defer col.Release()
	return array.NewRecordBatch(m.Schema(), []arrow.Array{col}, int64(rows))
}

// Close finishes the shard, makes it durable and renames it into place. It
// returns the shard's Info (without Split).
func (w *Writer) Close() (Info, error) { return w.finish(nil) }

// CloseVerified is Close for a copy of a known shard: unless the bytes
// written match want's size and sha256, the file is discarded and an error
// returned.
func (w *Writer) CloseVerified(want Info) (Info, error) { return w.finish(&want) }

func (w *Writer) finish(want *Info) (Info, error) {
	if w.done {
		return Info{}, fmt.Errorf("shard %s: closed twice", w.path)
	}
	fail := func(err error) (Info, error) {
		w.Abort()
		return Info{}, err
	}
	if err := w.flush(); err != nil {
		return fail(err)
	}
	if w.seqs == 0 {
		return fail(fmt.Errorf("shard %s: no sequences", w.path))
	}
	if err := w.aw.Close(); err != nil {
		return fail(fmt.Errorf("shard %s: %w", w.path, err))
	}
	if err := w.bw.Flush(); err != nil {
		return fail(fmt.Errorf("shard %s: %w", w.path, err))
	}
	info := Info{Name: filepath.Base(w.path), Sequences: w.seqs, Bytes: w.n, SHA256: hex.EncodeToString(w.sum.Sum(nil))}
	if want != nil {
		if info.Bytes != want.Bytes || info.SHA256 != want.SHA256 || info.Sequences != want.Sequences {
			return fail(fmt.Errorf("shard %s: copy does not match the manifest: %d sequences, %d bytes, sha256 %s; want %d, %d, %s",
				w.path, info.Sequences, info.Bytes, info.SHA256, want.Sequences, want.Bytes, want.SHA256))
		}
		info.Split = want.Split
	}
	if err := w.f.Chmod(0o644); err != nil {
		return fail(fmt.Errorf("shard %s: %w", w.path, err))
	}
	if err := w.f.Sync(); err != nil {
		return fail(fmt.Errorf("shard %s: %w", w.path, err))
	}
	if err := w.f.Close(); err != nil {
		return fail(fmt.Errorf("shard %s: %w", w.path, err))
	}
	if err := os.Rename(w.f.Name(), w.path); err != nil {
		return fail(fmt.Errorf("shard %s: %w", w.path, err))
	}
	w.done = true
	if err := syncDir(filepath.Dir(w.path)); err != nil {
		return Info{}, err
	}
	return info, nil
}

// Abort discards the temporary file of an unfinished shard.
func (w *Writer) Abort() {
	if w.done {
		return
	}
	w.done = true
	w.f.Close()
	os.Remove(w.f.Name())
}
