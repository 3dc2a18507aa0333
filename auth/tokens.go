package auth

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"

	"github.com/ferryhq/ferry/store"
)

// MinTokenLength is the shortest secret, in bytes, a token file may give in
// clear: 16 bytes, so that a secret cannot be guessed by trying.
const MinTokenLength = 16

// maxTokenFileBytes bounds a token file read.
const maxTokenFileBytes = 16 << 20

// Principal is an authenticated token: its name and its rights. It is
// shared by all requests of the token; its rights never change.
type Principal struct {
	// Name identifies the token in logs and error messages; never the secret.
	Name string
	// Read lists the key prefixes the token may download, stat and list.
	Read []string
	// Write lists the key prefixes the token may upload to and delete.
	Write []string
	// MaxUploads is the most upload requests (Upload streams and PutChunk
	// calls) the token may have in flight; 0 means the interceptor's default.
	MaxUploads int

	uploads atomic.Int64 // upload requests in flight
}

// CanRead reports whether p may read the object at key.
func (p *Principal) CanRead(key string) bool { return covered(p.Read, key) }

// CanWrite reports whether p may write or delete the object at key.
func (p *Principal) CanWrite(key string) bool { return covered(p.Write, key) }

// CanList reports whether p may list the keys under prefix: only when one of
// its read prefixes covers prefix entirely, so no key outside them can be
// listed.
func (p *Principal) CanList(prefix string) bool { return covered(p.Read, prefix) }

func covered(prefixes []string, key string) bool {
	for _, p := range prefixes {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// Tokens is a set of tokens read from a token file. It is safe for
// concurrent use.
type Tokens struct {
	entries []tokenEntry
}

type tokenEntry struct {
	hash      [sha256.Size]byte
	principal *Principal
}

// tokenFile is the JSON form of a token file; see the package doc.
type tokenFile struct {
	Tokens []tokenSpec `json:"tokens"`
}

type tokenSpec struct {
	Name       string   `json:"name"`
	Token      string   `json:"token,omitempty"`
	SHA256     string   `json:"sha256,omitempty"`
	Read       []string `json:"read,omitempty"`
	Write      []string `json:"write,omitempty"`
	MaxUploads int      `json:"max_uploads,omitempty"`
}

// LoadTokens reads the token file at path (format in the package doc).
func LoadTokens(path string) (*Tokens, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	defer f.Close()
	t, err := ParseTokens(f)
	if err != nil {
		return nil, fmt.Errorf("token file %s: %w", path, err)
	}
	return t, nil
}

// ParseTokens reads a token file (format in the package doc) from r. It
// fails on malformed JSON, unknown fields, an entry without a name, with
// both or neither of token and sha256, with a secret shorter than
// [MinTokenLength] or a sha256 that is not 64 hex digits, with an invalid
// prefix or no rights at all, on duplicate names or secrets, and on a file
// without tokens.
func ParseTokens(r io.Reader) (*Tokens, error) {
	b, err := io.ReadAll(io.LimitReader(r, maxTokenFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxTokenFileBytes {
		return nil, fmt.Errorf("larger than %d bytes", maxTokenFileBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var file tokenFile
	if err := dec.Decode(&file); err != nil {
		return nil, fmt.Errorf("not a token file: %w", err)
	}
	if dec.More() {
		return nil, errors.New("not a token file: data after the JSON object")
	}
	if len(file.Tokens) == 0 {
		return nil, errors.New(`no tokens: give at least one entry in "tokens"`)
	}
	t := &Tokens{}
	names := make(map[string]bool)
	hashes := make(map[[sha256.Size]byte]bool)
	for i, spec := range file.Tokens {
		e, err := spec.entry()
		if err != nil {
			if spec.Name != "" {
				return nil, fmt.Errorf("token %q: %w", spec.Name, err)
			}
			return nil, fmt.Errorf("token #%d: %w", i+1, err)
		}
		if names[spec.Name] {
			return nil, fmt.Errorf("token name %q is used twice", spec.Name)
		}
		if hashes[e.hash] {
			return nil, fmt.Errorf("token %q has the same secret as an earlier token", spec.Name)
		}
		names[spec.Name], hashes[e.hash] = true, true
		t.entries = append(t.entries, e)
	}
	return t, nil
}

func (s tokenSpec) entry() (tokenEntry, error) {
	var e tokenEntry
	switch {
	case s.Name == "":
		return e, errors.New("name is missing")
	case strings.IndexFunc(s.Name, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0:
		return e, errors.New("name has a control character")
	case (s.Token == "") == (s.SHA256 == ""):
		return e, errors.New(`give exactly one of "token" (the secret) and "sha256" (its hex SHA-256)`)
	case s.Token != "" && len(s.Token) < MinTokenLength:
		return e, fmt.Errorf("secret is %d bytes; at least %d are required", len(s.Token), MinTokenLength)
	case len(s.Read) == 0 && len(s.Write) == 0:
		return e, errors.New(`grants nothing: give "read" and/or "write" prefixes ("" for every key)`)
	case s.MaxUploads < 0:
		return e, fmt.Errorf("max_uploads %d is negative", s.MaxUploads)
	}
	if s.Token != "" {
		e.hash = sha256.Sum256([]byte(s.Token))
	} else {
		h, err := hex.DecodeString(s.SHA256)
		if err != nil || len(h) != sha256.Size {
			return e, errors.New("sha256 must be 64 hex digits")
		}
		copy(e.hash[:], h)
	}
	for _, p := range append(append([]string(nil), s.Read...), s.Write...) {
		if err := store.ValidatePrefix(p); err != nil {
			return e, fmt.Errorf("prefix %q: %w", p, err)
		}
	}
	e.principal = &Principal{
		Name:       s.Name,
		Read:       append([]string(nil), s.Read...),
		Write:      append([]string(nil), s.Write...),
		MaxUploads: s.MaxUploads,
	}
	return e, nil
}

// Len returns the number of tokens.
func (t *Tokens) Len() int { return len(t.entries) }

// Authenticate returns the principal whose secret is secret. It hashes
// secret with SHA-256 and compares the hash with every token's in constant
// time, without stopping at a match.
func (t *Tokens) Authenticate(secret string) (*Principal, bool) {
	h := sha256.Sum256([]byte(secret))
	var found *Principal
	for i := range t.entries {
		if subtle.ConstantTimeCompare(h[:], t.entries[i].hash[:]) == 1 {
			found = t.entries[i].principal
		}
	}
	return found, found != nil
}

// HashToken returns the hex SHA-256 of secret: the "sha256" value of a
// token file entry.
func HashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}
