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

// Limits of a key's shape, besides [MaxKeyLength]. See [ValidateKey].
const (
	// MaxSegmentLength is the longest segment (the text between two "/")
	// of a key, in bytes: NAME_MAX of Linux file systems, which MinIO and
	// POSIX gateways such as versitygw store each segment as. MinIO
	// counts runes, not bytes, before it reaches the file system, so a
	// longer segment of multi-byte characters can pass its first check and
	// fail only at completion.
	MaxSegmentLength = 255
	// MaxKeySegments is the most segments a key may have (so at most 31
	// "/"). Creating an object costs one store request per ancestor of its
	// key (see [ErrKeyConflict]), which this bounds.
	MaxKeySegments = 32
)

// ErrInvalidKey is wrapped by [ValidateKey] and [ValidatePrefix] with the
// reason a key or prefix is refused, and by stores when the backend refuses
// a key's name (the backend's reason then follows).
var ErrInvalidKey = errors.New("invalid key")

// ErrKeyConflict: the key cannot name a new object because an object exists
// at one of its ancestors (the key up to one of its "/": "d/a" for
// "d/a/b"), or objects exist under key+"/". S3 servers on a file system
// store a key's segments as directories and cannot keep both: MinIO stores
// both but no longer lists the deeper one (minio/minio#18148), POSIX
// gateways refuse one. ferry refuses the second key on every store, so
// every object stays listed. Stores return it when their backend refuses
// a write for that reason.
var ErrKeyConflict = errors.New("key conflicts with an existing object")

// ValidateKey reports whether key may name a client's object. The rules are
// what every supported backend (AWS S3, MinIO, POSIX gateways such as
// versitygw, the disk store) stores under exactly that key and lists back
// unchanged, so that no two valid keys name one object and every object is
// listed. A key:
//
//   - is 1 to [MaxKeyLength] (1024) bytes of valid UTF-8 (S3's limit);
//   - is a "/"-separated list of 1 to [MaxKeySegments] (32) segments, each
//     1 to [MaxSegmentLength] (255) bytes: no leading or trailing "/" and no
//     "//" (MinIO and versitygw drop a leading "/", so "/a" would replace
//     "a"; versitygw reads "a//b" as "a/b"; a trailing "/" names a
//     directory, which MinIO and versitygw refuse to give data);
//   - has no segment "." or "..", with or without white space around
//     (MinIO refuses " .. " too), no segment of only white space (minio-go
//     refuses a key of only white space), and no segment ending in
//     "__XLDIR__" (MinIO's mark of a directory object: "x__XLDIR__" is
//     listed as "x/", "x/__XLDIR__/y" not at all);
//   - has no backslash (MinIO reads it as a separator when it looks for
//     ".." segments, Windows clients always do), no control character
//     (C0, DEL, C1), no line or paragraph separator (U+2028, U+2029), no
//     Unicode noncharacter (U+FDD0 to U+FDEF and U+xxFFFE, U+xxFFFF:
//     versitygw lists U+FFFE and U+FFFF as U+FFFD, since XML cannot carry
//     them) and no bidirectional embedding, override or isolate control
//     (U+202A to U+202E, U+2066 to U+2069), which make a key display in
//     another order than it is stored;
//   - is not under [ReservedPrefix].
//
// Everything else is allowed: spaces inside or around a segment, any
// letter, mark, symbol or emoji, other format characters (joiners, soft
// hyphen), and characters such as + % ~ = : * ? # & @. Keys are compared
// as bytes: "café" in NFC and in NFD are two keys, as are "a" and "A",
// which holds on file systems that keep names byte for byte (ext4, XFS,
// ZFS without normalization), the ones ferry supports for POSIX backends.
//
// A valid key can still conflict with existing objects; see
// [ErrKeyConflict]. The error wraps [ErrInvalidKey] and names the rule and
// where the key breaks it, in words safe to show a client.
func ValidateKey(key string) error {
	switch {
	case key == "":
		return fmt.Errorf("%w: key is empty", ErrInvalidKey)
	case len(key) > MaxKeyLength:
		return fmt.Errorf("%w: key is %d bytes, the limit is %d", ErrInvalidKey, len(key), MaxKeyLength)
	}
	if err := checkChars("key", key); err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(key, ReservedPrefix) || key == strings.TrimSuffix(ReservedPrefix, "/"):
		return fmt.Errorf("%w: keys under %q are reserved", ErrInvalidKey, ReservedPrefix)
	case key[0] == '/':
		return fmt.Errorf(`%w: key starts with "/": S3 servers drop a leading "/", so it would name the object without it`, ErrInvalidKey)
	case key[len(key)-1] == '/':
		return fmt.Errorf(`%w: key ends with "/": on S3 servers that names a directory, not an object`, ErrInvalidKey)
	}
	if n := strings.Count(key, "/") + 1; n > MaxKeySegments {
		return fmt.Errorf("%w: key has %d segments (parts between \"/\"), the limit is %d", ErrInvalidKey, n, MaxKeySegments)
	}
	return checkSegments("key", key, true)
}

// ValidatePrefix reports whether prefix may be used to list objects: a
// prefix that valid keys can start with. It is at most [MaxKeyLength]
// bytes, follows the character rules of [ValidateKey], does not start with
// "/", and every segment it ends with a "/" follows the segment rules of
// [ValidateKey] ("a//" and "a/../" are refused; "a/" and "a/." are
// prefixes); the last segment is at most [MaxSegmentLength] bytes. Empty
// lists everything but [ReservedPrefix], under which nothing can be
// listed. The error wraps [ErrInvalidKey].
func ValidatePrefix(prefix string) error {
	if len(prefix) > MaxKeyLength {
		return fmt.Errorf("%w: prefix is %d bytes, the limit is %d", ErrInvalidKey, len(prefix), MaxKeyLength)
	}
	if prefix == "" {
		return nil
	}
	if err := checkChars("prefix", prefix); err != nil {
		return err
	}
	switch {
	case strings.HasPrefix(prefix, ReservedPrefix):
		return fmt.Errorf("%w: keys under %q are reserved", ErrInvalidKey, ReservedPrefix)
	case prefix[0] == '/':
		return fmt.Errorf(`%w: prefix starts with "/", and no key does`, ErrInvalidKey)
	}
	if n := strings.Count(prefix, "/"); n >= MaxKeySegments {
		return fmt.Errorf("%w: prefix has %d \"/\", and keys have at most %d", ErrInvalidKey, n, MaxKeySegments-1)
	}
	return checkSegments("prefix", prefix, false)
}

// checkChars applies the character rules of [ValidateKey] to s, which
// names itself what ("key", "prefix") in errors.
func checkChars(what, s string) error {
	for i, r := range s {
		var char, reason string
		switch {
		case r == utf8.RuneError:
			if _, size := utf8.DecodeRuneInString(s[i:]); size == 1 {
				return fmt.Errorf("%w: %s is not valid UTF-8 at byte %d", ErrInvalidKey, what, i)
			}
		case r == '\\':
			char, reason = "backslash", "some S3 servers and every Windows client read it as a path separator"
		case unicode.IsControl(r):
			char = fmt.Sprintf("control character %U", r)
		case r == '\u2028' || r == '\u2029':
			char = fmt.Sprintf("line or paragraph separator %U", r)
		case isNoncharacter(r):
			char, reason = fmt.Sprintf("Unicode noncharacter %U", r), "S3 listings cannot carry all of them"
		case r >= '\u202a' && r <= '\u202e' || r >= '\u2066' && r <= '\u2069':
			char, reason = fmt.Sprintf("bidirectional control %U", r), "it makes a key display in another order than it is stored"
		}
		switch {
		case char != "" && reason != "":
			return fmt.Errorf("%w: %s has a %s at byte %d: %s", ErrInvalidKey, what, char, i, reason)
		case char != "":
			return fmt.Errorf("%w: %s has a %s at byte %d", ErrInvalidKey, what, char, i)
		}
	}
	return nil
}

// isNoncharacter reports whether r is one of Unicode's 66 noncharacters,
// which are reserved for a program's internal use and never exchanged.
func isNoncharacter(r rune) bool {
	return r >= 0xfdd0 && r <= 0xfdef || r&0xfffe == 0xfffe
}

// dirSuffix is the suffix MinIO gives a directory object's name on disk
// ("a/" is stored as "a__XLDIR__"); it lists any name with it as a
// directory.
const dirSuffix = "__XLDIR__"

// checkSegments applies the segment rules of [ValidateKey] to s. When
// whole is false, s is a prefix: its last segment may be partial, so only
// its length is checked.
func checkSegments(what, s string, whole bool) error {
	start := 0
	for n := 1; ; n++ {
		end := strings.IndexByte(s[start:], '/')
		last := end < 0
		if last {
			end = len(s)
		} else {
			end += start
		}
		seg := s[start:end]
		if last && !whole {
			if len(seg) > MaxSegmentLength {
				return fmt.Errorf("%w: %s segment %d (at byte %d) is %d bytes, the limit is %d", ErrInvalidKey, what, n, start, len(seg), MaxSegmentLength)
			}
			return nil
		}
		if err := checkSegment(what, seg, n, start); err != nil {
			return err
		}
		if last {
			return nil
		}
		start = end + 1
	}
}

// checkSegment checks segment n of a key, which starts at byte offset.
func checkSegment(what, seg string, n, offset int) error {
	where := fmt.Sprintf("%s segment %d (at byte %d)", what, n, offset)
	trimmed := strings.TrimFunc(seg, unicode.IsSpace)
	switch {
	case seg == "":
		return fmt.Errorf(`%w: %s is empty ("//")`, ErrInvalidKey, where)
	case len(seg) > MaxSegmentLength:
		return fmt.Errorf("%w: %s is %d bytes, the limit is %d", ErrInvalidKey, where, len(seg), MaxSegmentLength)
	case trimmed == "":
		return fmt.Errorf("%w: %s is only white space", ErrInvalidKey, where)
	case trimmed == "." || trimmed == "..":
		return fmt.Errorf("%w: %s is %q: \".\" and \"..\" path segments are not allowed", ErrInvalidKey, where, seg)
	case strings.HasSuffix(seg, dirSuffix):
		return fmt.Errorf("%w: %s ends with %q, which MinIO reserves for directories", ErrInvalidKey, where, dirSuffix)
	}
	return nil
}
