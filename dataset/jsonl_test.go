package dataset

import (
	"bytes"
	"math"
	"strings"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
)

func gzipBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func zstdBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	w, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	return w.EncodeAll(data, nil)
}

// TestLineChunker: runs end at line ends (except the last), are no longer
// than the size asked for plus a line, and together give back the stream.
func TestLineChunker(t *testing.T) {
	var in strings.Builder
	for i := range 500 {
		in.WriteString(strings.Repeat("z", i*7%300))
		in.WriteString("\n")
	}
	in.WriteString("no newline at the end")
	for _, size := range []int{1, 100, 4096, 1 << 20} {
		c := &lineChunker{r: &oneByteReader{strings.NewReader(in.String())}}
		var got strings.Builder
		for {
			b, err := c.next(size)
			if err != nil {
				t.Fatal(err)
			}
			if len(b) == 0 {
				break
			}
			rest := in.Len() - got.Len() - len(b)
			if rest > 0 && b[len(b)-1] != '\n' {
				t.Fatalf("size %d: run of %d bytes ending %q before the end", size, len(b), b[len(b)-1])
			}
			if len(b) > size+300 {
				t.Fatalf("size %d: run of %d bytes, more than the size and a line", size, len(b))
			}
			got.Write(b)
		}
		if got.String() != in.String() {
			t.Fatalf("size %d: runs do not give back the stream", size)
		}
	}
}

type oneByteReader struct{ r *strings.Reader }

func (o *oneByteReader) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }

// FuzzJSONLCompressed: the gzip and zstd JSONL readers never panic on
// arbitrary bytes, as a compressed stream or after decompression.
func FuzzJSONLCompressed(f *testing.F) {
	lines := []byte("{\"text\": \"hello\"}\n\n{\"text\": \"wörld\", \"n\": 1}\n{\"x\": 2}\n")
	for _, seed := range [][]byte{gzipBytes(f, lines), zstdBytes(f, lines), gzipBytes(f, nil), lines, {0x1f, 0x8b, 8}, {0x28, 0xb5, 0x2f, 0xfd}} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, zst bool) {
		name, packed := "fuzz.jsonl.gz", gzipBytes(t, data)
		if zst {
			name, packed = "fuzz.jsonl.zst", zstdBytes(t, data)
		}
		o := PrepareOptions{Field: "text", Tokenizer: Bytes{}}
		var out int
		send := func(j *job) error {
			docs, _ := o.tokenize(j)
			out += len(docs)
			return nil
		}
		// Decompressed or raw, the bytes make whole-line jobs.
		for _, in := range [][]byte{data, packed} {
			f := inputFile{path: name, format: FormatJSONL}
			var capped bool
			readJSONL(f, bytes.NewReader(in), nil, send, func() int64 { return math.MaxInt64 }, &capped)
		}
	})
}
