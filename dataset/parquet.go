package dataset

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/file"
	"github.com/apache/arrow-go/v18/parquet/pqarrow"
)

// parquetBatchBytes is the uncompressed size of the column data aimed at
// per record batch. With the page being decoded and the stream buffer it
// bounds what one Parquet file holds in memory, whatever its row groups'
// size.
const parquetBatchBytes = 1 << 20

// errStop ends a read early without an error (the --max-mb cap).
var errStop = errors.New("stop")

// rowBatch is a run of rows of one column, copied out of Arrow memory.
type rowBatch struct {
	rg    int     // row group
	first int64   // file row number (from 0) of the first row
	off   []int   // row i is data[off[i]:off[i+1]] or ids[off[i]:off[i+1]]
	data  []byte  // texts (--field)
	ids   []int32 // token ids (--tokens-field)
	nulls int64   // null rows, left empty
}

func (b *rowBatch) len() int { return len(b.off) - 1 }

// parquetFile reads one column of a Parquet file.
type parquetFile struct {
	path   string
	rdr    *file.Reader
	fr     *pqarrow.FileReader
	leaves []int // leaf columns of the chosen field
	ids    bool  // the field is a list of token ids
}

// openParquet opens src and finds the column field: a string or binary
// column, or with ids a list of integers.
func openParquet(path string, src parquet.ReaderAtSeeker, field string, ids bool, mem memory.Allocator) (pf *parquetFile, err error) {
	defer recoverDecode(&err, "parquet "+path)
	props := parquet.NewReaderProperties(mem)
	props.BufferedStreamEnabled = true // stream column chunks, never read one whole
	rdr, err := file.NewParquetReader(src, file.WithReadProps(props))
	if err != nil {
		return nil, fmt.Errorf("parquet %s: %w", path, err)
	}
	defer func() {
		if err != nil {
			rdr.Close()
		}
	}()
	fr, err := pqarrow.NewFileReader(rdr, pqarrow.ArrowReadProperties{}, mem)
	if err != nil {
		return nil, fmt.Errorf("parquet %s: %w", path, err)
	}
	var sf *pqarrow.SchemaField
	var cols []string
	for i := range fr.Manifest.Fields {
		f := &fr.Manifest.Fields[i]
		cols = append(cols, f.Field.Name+" ("+f.Field.Type.String()+")")
		if f.Field.Name == field && sf == nil {
			sf = f
		}
	}
	if sf == nil {
		return nil, fmt.Errorf("parquet %s: no column %q; its columns: %s", path, field, strings.Join(cols, ", "))
	}
	if err := checkColumnType(sf.Field.Type, ids); err != nil {
		return nil, fmt.Errorf("parquet %s: column %q: %w", path, field, err)
	}
	pf = &parquetFile{path: path, rdr: rdr, fr: fr, ids: ids}
	pf.leaves = leafColumns(sf, nil)
	if len(pf.leaves) == 0 {
		return nil, fmt.Errorf("parquet %s: column %q has no data columns", path, field)
	}
	fr.Props.BatchSize = pf.batchRows()
	return pf, nil
}

// checkColumnType accepts text columns (string or binary) or, with ids,
// lists of integers.
func checkColumnType(t arrow.DataType, ids bool) error {
	if !ids {
		switch t.ID() {
		case arrow.STRING, arrow.LARGE_STRING, arrow.BINARY, arrow.LARGE_BINARY, arrow.STRING_VIEW, arrow.BINARY_VIEW:
			return nil
		}
		return fmt.Errorf("type %s is not text (want string, large_string or binary; --tokens-field reads token id lists)", t)
	}
	if l, ok := t.(arrow.ListLikeType); ok && arrow.IsInteger(l.Elem().ID()) {
		return nil
	}
	return fmt.Errorf("type %s is not a list of integer token ids", t)
}

func leafColumns(f *pqarrow.SchemaField, out []int) []int {
	if f.IsLeaf() {
		return append(out, f.ColIndex)
	}
	for i := range f.Children {
		out = leafColumns(&f.Children[i], out)
	}
	return out
}

// batchRows picks rows per record batch from the column's largest
// uncompressed bytes per row over the row groups.
func (pf *parquetFile) batchRows() int64 {
	md := pf.rdr.MetaData()
	perRow := 1.0
	for rg := range md.NumRowGroups() {
		r := md.RowGroup(rg)
		if r.NumRows() <= 0 {
			continue
		}
		var sz int64
		for _, c := range pf.leaves {
			if cc, err := r.ColumnChunk(c); err == nil {
				sz += max(0, cc.TotalUncompressedSize())
			}
		}
		perRow = max(perRow, float64(sz)/float64(r.NumRows()))
	}
	return int64(min(max(parquetBatchBytes/perRow, 1), 1<<16))
}

func (pf *parquetFile) close() { pf.rdr.Close() }

// each calls fn with the rows of the file in order, one record batch at a
// time, row group by row group. vocab bounds token ids. An errStop from fn
// ends the read with no error.
func (pf *parquetFile) each(ctx context.Context, vocab int, fn func(*rowBatch) error) error {
	var row int64
	for rg := range pf.rdr.NumRowGroups() {
		n, err := pf.rowGroup(ctx, rg, row, vocab, fn)
		if errors.Is(err, errStop) {
			return nil
		}
		if err != nil {
			return err
		}
		row += n
	}
	return nil
}

// rowGroup reads row group rg, whose first row is first, and returns its
// number of rows.
func (pf *parquetFile) rowGroup(ctx context.Context, rg int, first int64, vocab int, fn func(*rowBatch) error) (n int64, err error) {
	where := fmt.Sprintf("parquet %s: row group %d", pf.path, rg)
	defer recoverDecode(&err, where)
	rr, err := pf.fr.GetRecordReader(ctx, pf.leaves, []int{rg})
	if err != nil {
		return 0, fmt.Errorf("%s: %w", where, err)
	}
	defer rr.Release()
	for rr.Next() {
		rec := rr.RecordBatch()
		if rec.NumCols() != 1 {
			return n, fmt.Errorf("%s: %d columns read, want 1", where, rec.NumCols())
		}
		b := &rowBatch{rg: rg, first: first + n}
		if pf.ids {
			err = b.copyIDs(rec.Column(0), vocab)
		} else {
			err = b.copyText(rec.Column(0))
		}
		if err != nil {
			return n, fmt.Errorf("%s: %w", where, err)
		}
		n += int64(b.len())
		if err := fn(b); err != nil {
			return n, err
		}
	}
	if err := rr.Err(); err != nil {
		return n, fmt.Errorf("%s: %w", where, err)
	}
	if want := pf.rdr.MetaData().RowGroup(rg).NumRows(); n != want {
		return n, fmt.Errorf("%s: read %d rows, the footer says %d", where, n, want)
	}
	return n, nil
}

// copyText copies a string or binary array.
func (b *rowBatch) copyText(a arrow.Array) error {
	b.off = make([]int, 1, a.Len()+1)
	var at func(i int)
	switch v := a.(type) {
	case interface{ Value(int) string }:
		at = func(i int) { b.data = append(b.data, v.Value(i)...) }
	case interface{ Value(int) []byte }:
		at = func(i int) { b.data = append(b.data, v.Value(i)...) }
	default:
		return fmt.Errorf("array of type %s is not text", a.DataType())
	}
	for i := range a.Len() {
		if a.IsNull(i) {
			b.nulls++
		} else {
			at(i)
		}
		b.off = append(b.off, len(b.data))
	}
	return nil
}

// copyIDs copies a list-of-integers array, checking every id against vocab.
func (b *rowBatch) copyIDs(a arrow.Array, vocab int) error {
	l, ok := a.(array.ListLike)
	if !ok {
		return fmt.Errorf("array of type %s is not a list", a.DataType())
	}
	vals := l.ListValues()
	get, err := intGetter(vals)
	if err != nil {
		return err
	}
	b.off = make([]int, 1, a.Len()+1)
	for i := range a.Len() {
		if a.IsNull(i) {
			b.nulls++
			b.off = append(b.off, len(b.ids))
			continue
		}
		s, e := l.ValueOffsets(i)
		if s < 0 || e < s || e > int64(vals.Len()) {
			return fmt.Errorf("row %d: list offsets [%d, %d) outside the %d values", b.first+int64(i), s, e, vals.Len())
		}
		for k := int(s); k < int(e); k++ {
			if vals.IsNull(k) {
				return fmt.Errorf("row %d: token %d is null", b.first+int64(i), k-int(s))
			}
			id, ok := get(k)
			if !ok || id < 0 || id >= int64(vocab) {
				return fmt.Errorf("row %d: token id %s at position %d is outside the vocabulary [0, %d)", b.first+int64(i), vals.ValueStr(k), k-int(s), vocab)
			}
			b.ids = append(b.ids, int32(id))
		}
		b.off = append(b.off, len(b.ids))
	}
	return nil
}

// intGetter returns a reader of element k of an integer array; ok is false
// for a uint64 beyond int64.
func intGetter(a arrow.Array) (func(k int) (int64, bool), error) {
	switch v := a.(type) {
	case *array.Int8:
		return func(k int) (int64, bool) { return int64(v.Value(k)), true }, nil
	case *array.Int16:
		return func(k int) (int64, bool) { return int64(v.Value(k)), true }, nil
	case *array.Int32:
		return func(k int) (int64, bool) { return int64(v.Value(k)), true }, nil
	case *array.Int64:
		return func(k int) (int64, bool) { return v.Value(k), true }, nil
	case *array.Uint8:
		return func(k int) (int64, bool) { return int64(v.Value(k)), true }, nil
	case *array.Uint16:
		return func(k int) (int64, bool) { return int64(v.Value(k)), true }, nil
	case *array.Uint32:
		return func(k int) (int64, bool) { return int64(v.Value(k)), true }, nil
	case *array.Uint64:
		return func(k int) (int64, bool) { x := v.Value(k); return int64(x), x <= 1<<63-1 }, nil
	}
	return nil, fmt.Errorf("list values of type %s are not integers", a.DataType())
}

// recoverDecode turns a panic of the Parquet decoder on malformed input into
// an error naming what was read.
func recoverDecode(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%s: corrupt data (decoder failed: %v)", what, r)
	}
}

// countReaderAt counts the bytes read through it, for progress.
type countReaderAt struct {
	f *os.File
	n atomic.Int64
}

func (c *countReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.f.ReadAt(p, off)
	c.n.Add(int64(n))
	return n, err
}

func (c *countReaderAt) Seek(off int64, whence int) (int64, error) { return c.f.Seek(off, whence) }

var _ io.ReaderAt = (*countReaderAt)(nil)

// produceParquet streams one Parquet file as jobs of one record batch each.
func (o *PrepareOptions) produceParquet(ctx context.Context, f inputFile, st *PrepareStats, send func(*job) error, left func() int64) error {
	fh, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer fh.Close()
	src := &countReaderAt{f: fh}
	return o.readParquet(ctx, f, src, func() int64 { return src.n.Load() }, st, send, left)
}

func (o *PrepareOptions) readParquet(ctx context.Context, f inputFile, src parquet.ReaderAtSeeker, read func() int64, st *PrepareStats, send func(*job) error, left func() int64) error {
	field, ids := o.Field, o.TokensField != ""
	if ids {
		field = o.TokensField
	}
	pf, err := openParquet(f.path, src, field, ids, memory.DefaultAllocator)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer pf.close()
	var seen int64
	err = pf.each(ctx, o.Tokenizer.Vocab(), func(b *rowBatch) error {
		room := left()
		if room <= 0 {
			st.MaxMBCapped = true
			return errStop
		}
		if b.cut(room) {
			st.MaxMBCapped = true
		}
		st.Nulls += b.nulls
		j := &job{file: f, rows: b, data: b.data}
		now := read()
		j.read, seen = now-seen, now
		return send(j)
	})
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	return nil
}

// cut drops the rows after the one that reaches room input bytes and
// reports whether it dropped any.
func (b *rowBatch) cut(room int64) bool {
	for i := 1; i < len(b.off)-1; i++ {
		if b.bytesTo(i) >= room {
			b.off = b.off[:i+1]
			b.data = b.data[:min(len(b.data), b.off[i])]
			b.ids = b.ids[:min(len(b.ids), b.off[i])]
			return true
		}
	}
	return false
}

// bytesTo is the input bytes of rows [0, i): text bytes, or 4 per token id.
func (b *rowBatch) bytesTo(i int) int64 {
	if b.ids != nil {
		return 4 * int64(b.off[i])
	}
	return int64(b.off[i])
}

// rowKey names row i of a batch for the validation split decision.
func (b *rowBatch) rowKey(file string, i int) string {
	return file + "#" + strconv.FormatInt(b.first+int64(i), 10)
}
