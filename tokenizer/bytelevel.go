package tokenizer

// byteChar maps a byte to the printable rune GPT-2's byte-level alphabet
// stands it for: printable Latin-1 bytes map to themselves, the other 68 to
// U+0100 and up, in byte order.
var byteChar [256]rune

// charByte is the inverse of byteChar.
var charByte = map[rune]byte{}

func init() {
	n := rune(0)
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			byteChar[b] = rune(b)
		} else {
			byteChar[b] = 256 + n
			n++
		}
		charByte[byteChar[b]] = byte(b)
	}
}

// toByteLevel returns the byte-level string of raw bytes, as vocab keys are
// written.
func toByteLevel(raw []byte) string {
	out := make([]rune, len(raw))
	for i, b := range raw {
		out[i] = byteChar[b]
	}
	return string(out)
}

// fromByteLevel returns the raw bytes a byte-level string stands for, and
// false if some rune of s is not in the alphabet.
func fromByteLevel(s string) ([]byte, bool) {
	out := make([]byte, 0, len(s))
	for _, r := range s {
		b, ok := charByte[r]
		if !ok {
			return nil, false
		}
		out = append(out, b)
	}
	return out, true
}

// decodeBytes is what Hugging Face's ByteLevel decoder makes of one token:
// its raw bytes if every rune is in the alphabet, else its UTF-8 text.
func decodeBytes(tok string) []byte {
	if b, ok := fromByteLevel(tok); ok {
		return b
	}
	return []byte(tok)
}
