package store

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ReservedPrefix is the key prefix under which ferry keeps its own state
// (upload manifests at ReservedPrefix+"uploads/<upload ID>"). Clients can
// neither write, read nor list keys under it.
const ReservedPrefix = ".ferry/"

// ErrInvalidKey is wrapped by [ValidateKey] with the reason a key is refused.
var ErrInvalidKey = errors.New("invalid key")

// ValidateKey reports whether key may name a client's object. A key is 1 to
// [MaxKeyLength] (1024, S3's limit) bytes of valid UTF-8, with no control
// characters, no "." or ".." path segments (they would let a key escape its
// prefix in tools that treat keys as paths), and not under [ReservedPrefix].
// The error wraps [ErrInvalidKey] and says why in words safe to show a client.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: key is empty", ErrInvalidKey)
	case len(key) > MaxKeyLength:
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrInvalidKey, len(key), MaxKeyLength)
	case !utf8.ValidString(key):
		return fmt.Errorf("%w: key is not valid UTF-8", ErrInvalidKey)
	case strings.HasPrefix(key, ReservedPrefix) || key == strings.TrimSuffix(ReservedPrefix, "/"):
		return fmt.Errorf("%w: keys under %q are reserved", ErrInvalidKey, ReservedPrefix)
	}
	if i := strings.IndexFunc(key, unicode.IsControl); i >= 0 {
		return fmt.Errorf("%w: control character at byte %d", ErrInvalidKey, i)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "." || seg == ".." {
			return fmt.Errorf("%w: %q path segments are not allowed", ErrInvalidKey, seg)
		}
	}
	return nil
}

// ValidatePrefix reports whether prefix may be used to list objects: valid
// UTF-8 of at most [MaxKeyLength] bytes without control characters. Empty
// lists everything (but [ReservedPrefix]). The error wraps [ErrInvalidKey].
func ValidatePrefix(prefix string) error {
	switch {
	case len(prefix) > MaxKeyLength:
		return fmt.Errorf("%w: prefix is %d bytes, the limit is %d", ErrInvalidKey, len(prefix), MaxKeyLength)
	case !utf8.ValidString(prefix):
		return fmt.Errorf("%w: prefix is not valid UTF-8", ErrInvalidKey)
	case strings.IndexFunc(prefix, unicode.IsControl) >= 0:
		return fmt.Errorf("%w: prefix has a control character", ErrInvalidKey)
	case strings.HasPrefix(prefix, ReservedPrefix):
		return fmt.Errorf("%w: keys under %q are reserved", ErrInvalidKey, ReservedPrefix)
	}
	return nil
}
