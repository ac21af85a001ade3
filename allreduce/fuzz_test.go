package allreduce

import (
	"testing"
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
			b := c.encode(make([]byte, headerSize), xs[:n], nil)
			h := header{kind: kindData, codec: info.id, gen: 3, step: 9, count: uint32(n)}
			h.put(b[:headerSize], b[headerSize:])
			f.Add(b)
		}
	}
	abort := make([]byte, headerSize+5)
	copy(abort[headerSize:], "boom!")
	(&header{kind: kindAbort, gen: 2}).put(abort[:headerSize], abort[headerSize:])
	f.Add(abort)
	beat := make([]byte, headerSize)
	(&header{kind: kindBeat, gen: 2}).put(beat, nil)
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
		_ = c.accumulate(dst, p)
	})
}

// TestDecodeRejects lists malformed messages and checks each is refused.
func TestDecodeRejects(t *testing.T) {
	good := func() []byte {
		b := noneCodec{}.encode(make([]byte, headerSize), []float32{1, 2, 3}, nil)
		(&header{kind: kindData, codec: 1, gen: 1, count: 3}).put(b[:headerSize], b[headerSize:])
		return b
	}
	if _, _, err := decodeMessage(good()); err != nil {
		t.Fatalf("good message refused: %v", err)
	}
	cases := map[string]func(b []byte) []byte{
		"short":          func(b []byte) []byte { return b[:headerSize-1] },
		"magic":          func(b []byte) []byte { b[0] = 'X'; return b },
		"version":        func(b []byte) []byte { b[4] = 9; return b },
		"reserved":       func(b []byte) []byte { b[7] = 1; return b },
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
