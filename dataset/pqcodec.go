package dataset

import (
	"fmt"
	"sync"

	"github.com/apache/arrow-go/v18/parquet"
	"github.com/apache/arrow-go/v18/parquet/compress"
	"github.com/klauspost/compress/snappy"
	"github.com/klauspost/compress/zstd"
)

// The Parquet page reader sizes its buffer from the page header, which it
// bounds, but arrow-go's snappy and zstd codecs trust the size written
// inside the compressed block and allocate that (up to gigabytes) when it
// is larger. A corrupt page could exhaust memory before it fails. These
// codecs refuse a block that claims more than its page, and replace the
// stock ones for every Parquet reader in the process.
func init() {
	if c, err := compress.GetCodec(compress.Codecs.Snappy); err == nil {
		compress.RegisterCodec(compress.Codecs.Snappy, boundedSnappy{c})
	}
	if c, err := compress.GetCodec(compress.Codecs.Zstd); err == nil {
		compress.RegisterCodec(compress.Codecs.Zstd, boundedZstd{c})
	}
}

type boundedSnappy struct{ compress.Codec }

func (c boundedSnappy) DecodeWithError(dst, src []byte) ([]byte, error) {
	n, err := snappy.DecodedLen(src)
	if err != nil {
		return nil, fmt.Errorf("snappy: %w", err)
	}
	if n > len(dst) {
		return nil, fmt.Errorf("snappy: block decodes to %d bytes, its page holds %d", n, len(dst))
	}
	return snappy.Decode(dst, src)
}

func (c boundedSnappy) Decode(dst, src []byte) []byte { return mustDecode(c, dst, src) }

type boundedZstd struct{ compress.Codec }

// zstdDecoders decode whole pages; each refuses output beyond the page
// reader's own limit on a page.
var zstdDecoders = sync.Pool{New: func() any {
	d, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1),
		zstd.WithDecoderMaxMemory(uint64(parquet.DefaultMaxUncompressedPageSize)))
	if err != nil {
		return err
	}
	return d
}}

func (c boundedZstd) DecodeWithError(dst, src []byte) ([]byte, error) {
	var h zstd.Header
	if err := h.Decode(src); err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if h.HasFCS && h.FrameContentSize > uint64(len(dst)) {
		return nil, fmt.Errorf("zstd: frame decodes to %d bytes, its page holds %d", h.FrameContentSize, len(dst))
	}
	v := zstdDecoders.Get()
	d, ok := v.(*zstd.Decoder)
	if !ok {
		return nil, fmt.Errorf("zstd: %v", v)
	}
	defer zstdDecoders.Put(d)
	out, err := d.DecodeAll(src, dst[:0])
	if err != nil {
		return nil, fmt.Errorf("zstd: %w", err)
	}
	if len(out) > len(dst) {
		return nil, fmt.Errorf("zstd: block decodes to %d bytes, its page holds %d", len(out), len(dst))
	}
	return out, nil
}

func (c boundedZstd) Decode(dst, src []byte) []byte { return mustDecode(c, dst, src) }

// mustDecode keeps the Codec interface's contract (Decode panics on bad
// input); the page reader calls DecodeWithError.
func mustDecode(c compress.ErrorCodec, dst, src []byte) []byte {
	out, err := c.DecodeWithError(dst, src)
	if err != nil {
		panic(err)
	}
	return out
}
