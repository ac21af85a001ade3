package dataset

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

// jsonlChunk is the size of the runs of whole JSONL lines handed to the
// tokenizer goroutines.
const jsonlChunk = 1 << 20

// decompress wraps r in a streaming gzip or zstd reader when name ends in
// .gz or .zst. The returned function releases the decoder.
func decompress(name string, r io.Reader) (io.Reader, func(), error) {
	switch {
	case strings.HasSuffix(name, ".gz"):
		z, err := gzip.NewReader(r)
		if err != nil {
			return nil, nil, fmt.Errorf("gzip: %w", err)
		}
		return z, func() { z.Close() }, nil
	case strings.HasSuffix(name, ".zst"):
		// One goroutine, and a window no larger than zstd's usual maximum,
		// so a hostile frame header cannot ask for gigabytes.
		z, err := zstd.NewReader(r, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxWindow(1<<27))
		if err != nil {
			return nil, nil, fmt.Errorf("zstd: %w", err)
		}
		return z, z.Close, nil
	}
	return r, func() {}, nil
}

// lineChunker cuts a stream into runs of whole lines: once it holds size
// bytes, a run ends at the last line end seen. Memory is bounded by size
// plus the longest line.
type lineChunker struct {
	r    io.Reader
	rest []byte
	eof  bool
}

// next returns the next run, or an empty slice at the end of the stream.
func (c *lineChunker) next(size int) ([]byte, error) {
	buf := make([]byte, 0, size+len(c.rest)+4096)
	buf = append(buf, c.rest...)
	c.rest = nil
	last := bytes.LastIndexByte(buf, '\n')
	for {
		if len(buf) >= size && last >= 0 {
			c.rest = bytes.Clone(buf[last+1:])
			return buf[:last+1], nil
		}
		if c.eof {
			return buf, nil
		}
		if cap(buf)-len(buf) < 4096 {
			nb := make([]byte, len(buf), 2*cap(buf))
			copy(nb, buf)
			buf = nb
		}
		old := len(buf)
		n, err := c.r.Read(buf[old:cap(buf)])
		buf = buf[:old+n]
		if i := bytes.LastIndexByte(buf[old:], '\n'); i >= 0 {
			last = old + i
		}
		if err == io.EOF {
			c.eof = true
		} else if err != nil {
			return nil, err
		}
	}
}

// countReader counts the bytes read through it.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// produceJSONL streams one JSONL file, plain or compressed, as jobs of
// whole lines. left returns how many more input bytes may be handed out.
func (o *PrepareOptions) produceJSONL(f inputFile, send func(*job) error, left func() int64, capped *bool) error {
	fh, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	defer fh.Close()
	cr := &countReader{r: fh}
	return readJSONL(f, cr, &cr.n, send, left, capped)
}

// readJSONL cuts r into jobs; read, if not nil, counts the file bytes
// consumed so far (for progress). It sets capped if left stopped it short
// of the end.
func readJSONL(f inputFile, r io.Reader, read *int64, send func(*job) error, left func() int64, capped *bool) error {
	dr, closeFn, err := decompress(f.path, r)
	if err != nil {
		return fmt.Errorf("prepare: %s: %w", f.path, err)
	}
	defer closeFn()
	c := &lineChunker{r: dr}
	line := 1
	var seen int64
	for left() > 0 {
		chunk, err := c.next(jsonlChunk)
		if err != nil {
			return fmt.Errorf("prepare: %s: after line %d: %w", f.path, line-1, err)
		}
		if len(chunk) == 0 {
			return nil
		}
		if room := left(); int64(len(chunk)) > room {
			n := cutLines(chunk, int(room))
			*capped = *capped || n < len(chunk)
			chunk = chunk[:n]
		}
		j := &job{file: f, line: line, data: chunk}
		if read != nil {
			j.read, seen = *read-seen, *read
		}
		if err := send(j); err != nil {
			return err
		}
		line += bytes.Count(chunk, []byte{'\n'})
	}
	if more, err := c.next(1); err != nil || len(more) > 0 {
		*capped = true
	}
	return nil
}
