package allreduce

import (
	"math"
	"testing"

	"google.golang.org/grpc/mem"
)

// FuzzDecodeMessage feeds arbitrary bytes to the message decoder and, when a
// message passes, to its codec: nothing may panic, and a payload that decodes
// must fill exactly its element count.
func FuzzDecodeMessage(f *testing.F) {
	xs := inputs(1, 600, 5)[0]
	for _, name := range Codecs {
		info, err := codecByName(name)
		if err != nil {
			f.Fatal(err)
		}
		c, err := info.make()
		if err != nil {
			f.Fatal(err)
		}
		for _, n := range []int{0, 1, 300, 600} {
			b := c.encode(make([]byte, headerSize), xs[:n], nil, nil, false)
			for _, flags := range []uint8{0, flagCRC} {
				h := header{kind: kindData, codec: info.id, flags: flags, gen: 3, step: 9, count: uint32(n)}
				h.put(b[:headerSize], b[headerSize:])
				f.Add(append([]byte(nil), b...))
			}
		}
	}
	abort := make([]byte, headerSize+5)
	copy(abort[headerSize:], "boom!")
	(&header{kind: kindAbort, flags: flagCRC, gen: 2}).put(abort[:headerSize], abort[headerSize:])
	f.Add(abort)
	beat := make([]byte, headerSize)
	(&header{kind: kindBeat, flags: flagCRC, gen: 2}).put(beat, nil)
	f.Add(beat)
	f.Add([]byte{})
	f.Add([]byte("DTAR"))

	codecs := map[uint8]codec{}
	for _, info := range codecTable {
		c, err := info.make()
		if err != nil {
			f.Fatal(err)
		}
		codecs[info.id] = c
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		h, p, err := decodeMessage(b)
		if err != nil || h.kind != kindData {
			return
		}
		if int(h.count) > len(b) {
			t.Fatalf("accepted %d elements in a %d-byte message", h.count, len(b))
		}
		dst := make([]float32, h.count)
		c := codecs[h.codec]
		_ = c.decode(dst, p)
		_ = c.accumulate(dst, p, nil)
	})
}

// TestDecodeRejects lists malformed messages and checks each is refused.
func TestDecodeRejects(t *testing.T) {
	good := func() []byte {
		b := noneCodec{}.encode(make([]byte, headerSize), []float32{1, 2, 3}, nil, nil, false)
		(&header{kind: kindData, codec: 1, flags: flagCRC, gen: 1, count: 3}).put(b[:headerSize], b[headerSize:])
		return b
	}
	if _, _, err := decodeMessage(good()); err != nil {
		t.Fatalf("good message refused: %v", err)
	}
	cases := map[string]func(b []byte) []byte{
		"short":          func(b []byte) []byte { return b[:headerSize-1] },
		"magic":          func(b []byte) []byte { b[0] = 'X'; return b },
		"version":        func(b []byte) []byte { b[4] = 9; return b },
		"flags":          func(b []byte) []byte { b[7] = 3; return b },
		"sum, no flag":   func(b []byte) []byte { b[7] = 0; return b },
		"kind":           func(b []byte) []byte { b[5] = 7; return b },
		"codec":          func(b []byte) []byte { b[6] = 77; return b },
		"truncated":      func(b []byte) []byte { return b[:len(b)-1] },
		"checksum":       func(b []byte) []byte { b[len(b)-1] ^= 1; return b },
		"count mismatch": func(b []byte) []byte { b[36] = 4; return b },
	}
	for name, mangle := range cases {
		t.Run(name, func(t *testing.T) {
			if _, _, err := decodeMessage(mangle(good())); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}

// pieces cuts b at the given offsets (taken modulo its length) into a
// frame's payload parts, as gRPC's receive buffers would hold it.
func pieces(f *Frame, b []byte, cuts []byte) {
	f.Buf = append(f.Buf[:0], b[:headerSize]...)
	f.parts = f.parts[:0]
	p := b[headerSize:]
	for _, c := range cuts {
		if len(p) == 0 {
			break
		}
		k := 1 + int(c)%len(p)
		f.parts = append(f.parts, mem.SliceBuffer(p[:k]))
		p = p[k:]
	}
	if len(p) > 0 {
		f.parts = append(f.parts, mem.SliceBuffer(p))
	}
}

// TestApplyPieces decodes payloads cut into pieces at odd offsets, as the
// gRPC transport delivers large messages, and checks that every codec gives
// exactly what it gives for the whole payload, and that with checksums a
// flipped byte is caught.
func TestApplyPieces(t *testing.T) {
	xs := inputs(2, 5000, 7)
	cutsets := [][]byte{nil, {1}, {3, 5, 7, 11, 13}, {255, 1, 2, 254, 17, 9, 200, 33}}
	for _, name := range Codecs {
		for _, checksum := range []bool{false, true} {
			r, err := New(mustInmem(t, "a"), len(xs[0]), Config{Codec: name, Checksum: checksum})
			if err != nil {
				t.Fatal(err)
			}
			b := r.enc.encode(make([]byte, headerSize), xs[0], nil, nil, false)
			h := header{kind: kindData, codec: r.info.id, flags: r.flags, count: uint32(len(xs[0]))}
			h.put(b[:headerSize], b[headerSize:])
			_, sum, err := decodeHeader(b[:headerSize], len(b)-headerSize)
			if err != nil {
				t.Fatal(err)
			}
			for _, add := range []bool{false, true} {
				want := append([]float32(nil), xs[1]...)
				var feed []float32 // an error-feedback residual joins the sum
				var err error
				if add {
					feed = xs[0]
					err = r.dec.accumulate(want, b[headerSize:], feed)
				} else {
					err = r.dec.decode(want, b[headerSize:])
				}
				if err != nil {
					t.Fatal(err)
				}
				for _, cuts := range cutsets {
					f := &Frame{}
					pieces(f, b, cuts)
					got := append([]float32(nil), xs[1]...)
					if err := r.apply(got, feed, f, sum, add); err != nil {
						t.Fatalf("%s checksum=%v cuts %v: %v", name, checksum, cuts, err)
					}
					for i := range want {
						if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
							t.Fatalf("%s cuts %v add=%v: element %d is %v, want %v", name, cuts, add, i, got[i], want[i])
						}
					}
					bad := append([]byte(nil), b...)
					bad[len(bad)/2] ^= 0x10
					pieces(f, bad, cuts)
					err := r.apply(got, feed, f, sum, add)
					if checksum && err == nil {
						t.Fatalf("%s cuts %v: flipped byte not caught", name, cuts)
					}
					if !checksum && name != CodecBF16Zstd && err != nil {
						// Without a checksum a flipped payload byte is a
						// different value, not an error (zstd may notice).
						t.Fatalf("%s cuts %v: %v", name, cuts, err)
					}
				}
			}
		}
	}
}

// FuzzApply feeds arbitrary payloads, cut into arbitrary pieces, to every
// codec's decoder as the ring runs it: nothing may panic.
func FuzzApply(f *testing.F) {
	xs := inputs(1, 600, 5)[0]
	for id, name := range Codecs {
		info, _ := codecByName(name)
		c, _ := info.make()
		for _, n := range []int{0, 1, 300, 600} {
			b := c.encode(nil, xs[:n], nil, nil, false)
			f.Add(uint8(id), uint16(n), b, []byte{3, 1, 7})
		}
	}
	rs := map[uint8]*Reducer{}
	for id, name := range Codecs {
		r, err := New(mustInmem(f, "a"), 0, Config{Codec: name, Checksum: id%2 == 0})
		if err != nil {
			f.Fatal(err)
		}
		rs[uint8(id)] = r
	}
	f.Fuzz(func(t *testing.T, id uint8, n uint16, payload, cuts []byte) {
		r := rs[id%uint8(len(Codecs))]
		if r.info.check(int(n), len(payload)) != nil {
			return // decodeHeader refuses it before apply
		}
		fr := &Frame{}
		pieces(fr, append(make([]byte, headerSize), payload...), cuts)
		dst := make([]float32, n)
		_ = r.apply(dst, nil, fr, 0, id%2 == 0)
	})
}
