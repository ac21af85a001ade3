package tokenizer

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

type expectFile struct {
	Tokenizer string `json:"tokenizer"`
	Vocab     int    `json:"vocab"`
	Library   string `json:"library"`
	Cases     []struct {
		Name       string   `json:"name"`
		Hex        string   `json:"hex"`
		IDs        []int32  `json:"ids"`
		IDsSpecial []int32  `json:"ids_special"`
		DecodedHex *string  `json:"decoded_hex"`
		Pieces     []string `json:"pieces"`
	} `json:"cases"`
}

func loadExpect(t *testing.T, name string) (*Tokenizer, *expectFile) {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name+".expect.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e expectFile
	if err := json.Unmarshal(data, &e); err != nil {
		t.Fatal(err)
	}
	tok, err := Load(filepath.Join("testdata", e.Tokenizer))
	if err != nil {
		t.Fatal(err)
	}
	return tok, &e
}

// TestMatchesHuggingFace compares ids with those the Hugging Face library
// gave for the same tokenizer file and text (scripts/tokenizer/fixtures.js).
func TestMatchesHuggingFace(t *testing.T) {
	for _, name := range []string{"gpt2", "gpt2-prefix", "llama3", "paper"} {
		t.Run(name, func(t *testing.T) {
			tok, e := loadExpect(t, name)
			if len(e.Cases) < 20 {
				t.Fatalf("only %d cases", len(e.Cases))
			}
			if tok.Vocab() != e.Vocab {
				t.Errorf("vocabulary %d, the library says %d", tok.Vocab(), e.Vocab)
			}
			for _, c := range e.Cases {
				text, err := hex.DecodeString(c.Hex)
				if err != nil {
					t.Fatal(err)
				}
				if c.Pieces != nil {
					if got := tok.preTokens(text); !slices.Equal(got, c.Pieces) && len(got)+len(c.Pieces) > 0 {
						t.Errorf("%s: pieces\n got %q\nwant %q", c.Name, got, c.Pieces)
					}
				}
				got := tok.Encode(nil, text)
				if !slices.Equal(got, c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
					t.Errorf("%s: %q\n got %v\nwant %v", c.Name, text, got, c.IDs)
					continue
				}
				if c.IDsSpecial != nil {
					if got := tok.EncodeSpecial(nil, text); !slices.Equal(got, c.IDsSpecial) {
						t.Errorf("%s: with specials\n got %v\nwant %v", c.Name, got, c.IDsSpecial)
					}
				}
				if c.DecodedHex != nil {
					want, _ := hex.DecodeString(*c.DecodedHex)
					if got := tok.Decode(nil, c.IDs); !bytes.Equal(got, want) {
						t.Errorf("%s: decoded %q, want %q", c.Name, got, want)
					}
				}
			}
		})
	}
}
