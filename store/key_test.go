package store

import (
	"errors"
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

// segments returns n segments of length bytes each ("aaa/bbb/..."), joined
// by "/".
func segments(n, length int) string {
	parts := make([]string, n)
	for i := range parts {
		parts[i] = strings.Repeat(string(rune('a'+i%26)), length)
	}
	return strings.Join(parts, "/")
}

func TestValidateKeyValid(t *testing.T) {
	t.Parallel()
	maxKey := strings.Repeat("m", 255) + "/" + strings.Repeat("n", 255) + "/" + strings.Repeat("o", 255) + "/" + strings.Repeat("p", 254) + "/q"
	for _, key := range []string{
		"a",
		"dir/sub/file.tar.gz",
		"héllo wörld/日本語のファイル",
		"a..b/..c/.../.hidden/trailing.",
		" leading space/trailing space /in side",
		"a+b%20c%2Fd~e=f:g;h,i@j$k!l'm(n)o[p]q{r}s^t`u|v<w>x\"y*z?#&",
		"café",       // NFC
		"cafe\u0301", // NFD: another key
		"A/a",
		"emoji 👨\u200d👩\u200d👧/flag 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f",
		"soft\u00adhyphen/zero\u200bwidth/bom\ufeff/nbsp\u00a0/ideographic\u3000space",
		"rtl \u200fmark/arabic عربى/hebrew עברית",
		"private\ue000use/replacement\ufffd/last \U0010fffd",
		"x/xl.meta", "xl.meta", "part.1", ".minio.sys/x", "x/__XLDIR", "x/__xldir__", "x/__XLDIR__x",
		".ferryish", ".ferry-x/y", "x/.ferry/y",
		strings.Repeat("s", 255),
		strings.Repeat("é", 127) + "e", // 255 bytes in 128 runes
		maxKey,
		segments(MaxKeySegments, 1),
		segments(MaxKeySegments, 31)[:MaxKeyLength-1] + "z",
	} {
		if err := ValidateKey(key); err != nil {
			t.Errorf("ValidateKey(%q) = %v, want nil", key, err)
		}
		if err := ValidatePrefix(key); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v, want nil (a valid key is a valid prefix)", key, err)
		}
	}
	if len(maxKey) != MaxKeyLength {
		t.Fatalf("maxKey has %d bytes", len(maxKey))
	}
}

func TestValidateKeyInvalid(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		key  string
		want string // in the error message
	}{
		{"", "key is empty"},
		{strings.Repeat("a/", 512) + "b", "key is 1025 bytes, the limit is 1024"},
		{"bad\xffutf8", "not valid UTF-8 at byte 3"},
		{"a/\xc3", "not valid UTF-8 at byte 2"},
		{"/a", `starts with "/"`},
		{"//a", `starts with "/"`},
		{"/team/x", `starts with "/"`},
		{"/", `starts with "/"`},
		{"//", `starts with "/"`},
		{"a/", `ends with "/"`},
		{"d/a/", `ends with "/"`},
		{"a//b", `segment 2 (at byte 2) is empty`},
		{"a/b//c", `segment 3 (at byte 4) is empty`},
		{"a\\b", "backslash"},
		{"a\\..\\b", "backslash"},
		{".", `segment 1 (at byte 0) is "."`},
		{"..", `is ".."`},
		{"../etc/passwd", `segment 1 (at byte 0) is ".."`},
		{"a/./b", `segment 2 (at byte 2) is "."`},
		{"a/../b", `segment 2 (at byte 2) is ".."`},
		{"a/ .. /b", `segment 2 (at byte 2) is " .. "`},
		{" .", `is " ."`},
		{".\u3000", `is ".\u3000"`},
		{" ", "segment 1 (at byte 0) is only white space"},
		{"  ", "only white space"},
		{"\u00a0", "only white space"},
		{"\u3000", "only white space"},
		{"a/ /b", "segment 2 (at byte 2) is only white space"},
		{"tab\there", "control character U+0009 at byte 3"},
		{"\t", "control character U+0009"},
		{"nl\n", "control character U+000A"},
		{"nul\x00", "control character U+0000 at byte 3"},
		{"del\x7f", "control character U+007F"},
		{"nel\u0085", "control character U+0085"},
		{"a\u2028b", "line or paragraph separator U+2028 at byte 1"},
		{"\u2028", "U+2028"},
		{"a\u2029b", "U+2029"},
		{"a\ufffeb", "noncharacter U+FFFE at byte 1"},
		{"a\uffff", "noncharacter U+FFFF"},
		{"a\ufdd0", "noncharacter U+FDD0"},
		{"a\ufdef", "noncharacter U+FDEF"},
		{"a\U0001fffe", "noncharacter U+1FFFE"},
		{"a\U0010ffff", "noncharacter U+10FFFF"},
		{"evil\u202etxt.exe", "bidirectional control U+202E at byte 4"},
		{"a\u202ab", "U+202A"},
		{"a\u2066b", "U+2066"},
		{"a\u2069b", "U+2069"},
		{"x__XLDIR__", `segment 1 (at byte 0) ends with "__XLDIR__"`},
		{"x/__XLDIR__", `segment 2 (at byte 2) ends with "__XLDIR__"`},
		{"x/y__XLDIR__/z", `segment 2 (at byte 2) ends with "__XLDIR__"`},
		{strings.Repeat("s", 256), "segment 1 (at byte 0) is 256 bytes, the limit is 255"},
		{"x/" + strings.Repeat("s", 256), "segment 2 (at byte 2) is 256 bytes"},
		{"x/" + strings.Repeat("é", 128), "segment 2 (at byte 2) is 256 bytes"},
		{strings.Repeat("s", 1024), "is 1024 bytes, the limit is 255"},
		{segments(MaxKeySegments+1, 1), "key has 33 segments"},
		{".ferry/uploads/x", "reserved"},
		{".ferry", "reserved"},
	} {
		err := ValidateKey(tc.key)
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidateKey(%q) = %v, want ErrInvalidKey", tc.key, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidateKey(%q) = %q, want it to say %q", tc.key, err, tc.want)
		}
	}
}

func TestValidatePrefix(t *testing.T) {
	t.Parallel()
	for _, p := range []string{
		"", "a", "a/", "a/b/", "a/.", "a/..", "a/..b/", "a/ ", ".f", ".ferry", "x__XLDIR",
		"x/" + strings.Repeat("s", 255), strings.Repeat("a/", MaxKeySegments-1),
	} {
		if err := ValidatePrefix(p); err != nil {
			t.Errorf("ValidatePrefix(%q) = %v, want nil", p, err)
		}
	}
	for _, tc := range []struct {
		prefix string
		want   string
	}{
		{"/", `starts with "/"`},
		{"/a/", `starts with "/"`},
		{"a//", "segment 2 (at byte 2) is empty"},
		{"a/../", `segment 2 (at byte 2) is ".."`},
		{"a/ /", "only white space"},
		{"x__XLDIR__/", "__XLDIR__"},
		{"a\\", "backslash"},
		{"a\n", "control character"},
		{"a\u2028", "U+2028"},
		{"bad\xff", "not valid UTF-8"},
		{".ferry/", "reserved"},
		{".ferry/uploads/", "reserved"},
		{"x/" + strings.Repeat("s", 256), "segment 2 (at byte 2) is 256 bytes"},
		{strings.Repeat("s", 256) + "/", "segment 1 (at byte 0) is 256 bytes"},
		{strings.Repeat("a/", MaxKeySegments), `prefix has 32 "/"`},
		{strings.Repeat("a", MaxKeyLength+1), "prefix is 1025 bytes"},
	} {
		err := ValidatePrefix(tc.prefix)
		if !errors.Is(err, ErrInvalidKey) {
			t.Errorf("ValidatePrefix(%q) = %v, want ErrInvalidKey", tc.prefix, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("ValidatePrefix(%q) = %q, want it to say %q", tc.prefix, err, tc.want)
		}
	}
}

// FuzzValidateKey checks the properties that make valid keys safe on every
// backend: a valid key is its own clean path (no server that cleans paths
// maps it elsewhere), "/"+key and key+"/" are not valid, its ancestors are
// valid keys, and every prefix of it is a valid prefix. A refusal always
// wraps ErrInvalidKey.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"a", "a/b", "/a", "a//b", "a/", "a/./b", " .. ", "x__XLDIR__", "é/\u202e", "a\\b", segments(MaxKeySegments, 2)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		if err != nil {
			if !errors.Is(err, ErrInvalidKey) {
				t.Fatalf("ValidateKey(%q) = %v, which does not wrap ErrInvalidKey", key, err)
			}
			if perr := ValidatePrefix(key); perr != nil && !errors.Is(perr, ErrInvalidKey) {
				t.Fatalf("ValidatePrefix(%q) = %v, which does not wrap ErrInvalidKey", key, perr)
			}
			return
		}
		if c := path.Clean(key); c != key {
			t.Errorf("valid key %q cleans to %q", key, c)
		}
		for _, alias := range []string{"/" + key, key + "/"} {
			if ValidateKey(alias) == nil {
				t.Errorf("valid key %q has a valid alias %q", key, alias)
			}
		}
		for i := range len(key) + 1 {
			if !utf8.ValidString(key[:i]) {
				continue
			}
			if err := ValidatePrefix(key[:i]); err != nil {
				t.Errorf("valid key %q: ValidatePrefix(%q) = %v", key, key[:i], err)
			}
			if i < len(key) && key[i] == '/' {
				if err := ValidateKey(key[:i]); err != nil {
					t.Errorf("valid key %q: its ancestor %q is invalid: %v", key, key[:i], err)
				}
			}
		}
	})
}
