package storetest

import (
	"bytes"
	"fmt"
	mathrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/ferryhq/ferry/store"
)

// trickyKeys returns valid keys under prefix at the edges of every rule of
// [store.ValidateKey]: the longest segment and key, the most segments,
// white space, dots, percent signs and other punctuation, Unicode letters
// of several scripts in NFC and NFD, format characters, emoji sequences,
// names MinIO uses on its disks, and keys that sort next to "/" in byte
// order. No key is an ancestor of another (see [store.ErrKeyConflict]).
func trickyKeys(t *testing.T, prefix string) []string {
	t.Helper()
	names := []string{
		"plain",
		"with space", " leading space", "trailing space ", "ws/ padded segment /leaf", "ws/\u00a0nbsp", "ws/tab-like\u3000ideographic",
		"dots/.hidden", "dots/trailing.", "dots/..double", "dots/...", "dots/a..b", "dots/.. x", "dots/x ..",
		"pct/%", "pct/%2F", "pct/%25", "pct/a%2Fb", "pct/%00", "pct/%zz", "pct/100%",
		"sym/+", "sym/a+b", "sym/~", "sym/=", "sym/&", "sym/?", "sym/#", "sym/*", "sym/:", "sym/|", "sym/<>", "sym/\"",
		"sym/'", "sym/`", "sym/^", "sym/{}", "sym/[]", "sym/;", "sym/,", "sym/@", "sym/$", "sym/!", "sym/()", "sym/a=b&c=d?e#f",
		"uni/caf\u00e9", "uni/cafe\u0301", "uni/A", "uni/a", "uni/\u00c5ngstr\u00f6m", "uni/A\u030angstro\u0308m",
		"uni/日本語のファイル名", "uni/Ελληνικά", "uni/Кириллица", "uni/עברית", "uni/عربي", "uni/हिन्दी", "uni/ไทย", "uni/한국어",
		"uni/family 👨\u200d👩\u200d👧", "uni/flag 🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "uni/skin 👍🏽",
		"uni/soft\u00adhyphen", "uni/zw\u200bspace", "uni/zwnj\u200cjoiner", "uni/bom\ufeff", "uni/\ufeffbom first", "uni/rtl\u200fmark",
		"uni/pua\ue000", "uni/repl\ufffd", "uni/astral \U0001f600", "uni/last \U0010fffd", "uni/ß", "uni/ss", "uni/ﬁ", "uni/fi",
		"uni/" + strings.Repeat("é", 127) + "e", // 255 bytes in 128 runes
		"uni/" + strings.Repeat("€", 85),        // 255 bytes
		"minio/xl.meta", "minio/part.1", "minio/.minio.sys/x", "minio/x__XLDIR", "minio/x__xldir__", "minio/null", "minio/xl.meta.bkp",
		"win/CON", "win/aux.txt", "win/NUL", "win/trailing dot.", "win/a:b",
		"order/a", "order/a!", "order/a-b", "order/a.b", "order/a0", "order/a~", "order/a\u00e9", "order/a\uff61", "order/a\U00010000",
		"long/" + strings.Repeat("s", store.MaxSegmentLength),
		"x/" + strings.Repeat("y", store.MaxSegmentLength) + "/z",
	}
	keys := make([]string, 0, len(names)+3)
	for _, n := range names {
		keys = append(keys, prefix+n)
	}
	// The longest key, in the longest segments; the most segments; both
	// (as many one-byte segments as leave the rest of the bytes to fill in
	// segments of up to 255 bytes within the limit of segments).
	keys = append(keys, fill(prefix+"max/", store.MaxKeyLength, 'm'))
	depth := store.MaxKeySegments - strings.Count(prefix, "/") - 1
	keys = append(keys, prefix+strings.Repeat("d/", depth)+"deepest")
	for k := depth; k >= 0; k-- {
		key := fill(prefix+strings.Repeat("e/", k), store.MaxKeyLength, 'e')
		if strings.Count(key, "/") < store.MaxKeySegments {
			keys = append(keys, key)
			break
		}
	}
	for _, k := range keys {
		if err := store.ValidateKey(k); err != nil {
			t.Fatalf("storetest: tricky key %q: %v", k, err)
		}
	}
	return keys
}

// fill returns s followed by as few segments of letter (at most
// [store.MaxSegmentLength] bytes each) as make it exactly length bytes.
func fill(s string, length int, letter byte) string {
	rest := length - len(s) // bytes left, separators included
	n := (rest + store.MaxSegmentLength + 1) / (store.MaxSegmentLength + 1)
	segs := make([]string, n)
	budget := rest - (n - 1) // bytes of segment text
	for i := range segs {
		size := min(budget-(n-1-i), store.MaxSegmentLength)
		segs[i] = strings.Repeat(string(letter+byte(i%3)), size)
		budget -= size
	}
	return s + strings.Join(segs, "/")
}

// randomKeys returns n valid keys under prefix, random from seed: 1 to 6
// segments of pieces of a tricky alphabet. Every last segment ends with
// "#<i>" and no other segment has a "#", so no key is an ancestor of
// another.
func randomKeys(prefix string, seed uint64, n int) []string {
	pieces := []string{
		"a", "b", "Z", "0", "9", " ", " ", ".", "..", "-", "_", "+", "%", "%2F", "~", "=", "(", ")", "[", "]", "!", "@", "&",
		"'", ",", ";", ":", "é", "e\u0301", "ß", "日", "本", "😀", "\u200d", "ק", "ع", "\u00a0", "\u00ad", "Ω", "\ufeff", "\U00010000",
	}
	r := mathrand.New(mathrand.NewPCG(seed, 0x6b657973))
	keys := make([]string, 0, n)
	for len(keys) < n {
		var b strings.Builder
		b.WriteString(prefix)
		segs := 1 + r.IntN(6)
		for s := range segs {
			if s > 0 {
				b.WriteByte('/')
			}
			for range 1 + r.IntN(12) {
				b.WriteString(pieces[r.IntN(len(pieces))])
			}
		}
		fmt.Fprintf(&b, "#%d", len(keys))
		if store.ValidateKey(b.String()) == nil {
			keys = append(keys, b.String())
		}
	}
	return keys
}

// testKeys: every valid key maps to exactly one object and every object is
// listed. Tricky and random valid keys are written with distinct contents
// (alternately by PutObject and by a multipart upload, the two paths on
// which servers check names), read back byte for byte under their own key,
// listed exactly once with their size (the whole prefix, in pages that
// start after tricky keys, and by prefixes of segments and of partial
// segments), and deleted.
func testKeys(t *testing.T, e env) {
	seed := uint64(time.Now().UnixNano())
	t.Logf("storetest: random keys from seed %d", seed)
	keys := trickyKeys(t, e.prefix)
	keys = append(keys, randomKeys(e.prefix+"rand-fixed/", 1, 60)...)
	keys = append(keys, randomKeys(e.prefix+"rand/", seed, 60)...)
	ancestors := map[string]bool{}
	for _, k := range keys {
		for i := range len(k) {
			if k[i] == '/' {
				ancestors[k[:i]] = true
			}
		}
	}
	data := map[string][]byte{}
	for i, k := range keys {
		if ancestors[k] {
			t.Fatalf("storetest: key %q is an ancestor of another key", k)
		}
		if _, dup := data[k]; dup {
			t.Fatalf("storetest: key %q is in the corpus twice", k)
		}
		data[k] = append([]byte(fmt.Sprintf("%d:%s:", i, k)), testData(uint64(300+i), i%50)...)
	}

	written := map[string]store.ObjectInfo{}
	for i, k := range keys {
		if i%2 == 0 {
			written[k] = e.put(t, k, data[k], store.PutOptions{})
		} else {
			written[k] = e.multipart(t, k, store.CreateOptions{}, data[k])
		}
	}
	for _, k := range keys {
		got, info := e.read(t, k, 0, -1, store.ReadOptions{})
		if !bytes.Equal(got, data[k]) {
			t.Errorf("ReadObject(%q) returned %d bytes %.40q..., want the %d written under that key", k, len(got), got, len(data[k]))
		}
		st := e.stat(t, k)
		for what, got := range map[string]store.ObjectInfo{"ReadObject": info, "StatObject": st} {
			if got.Key != k || got.Size != int64(len(data[k])) || got.ETag != written[k].ETag {
				t.Errorf("%s(%q) = key %q, size %d, ETag %q; want the key, size %d, ETag %q", what, k, got.Key, got.Size, got.ETag, len(data[k]), written[k].ETag)
			}
		}
	}

	sorted := slices.Clone(keys)
	slices.Sort(sorted)
	wantList := func(what, prefix, startAfter string, pageSize int) {
		t.Helper()
		var want []string
		for _, k := range sorted {
			if strings.HasPrefix(k, prefix) && k > startAfter {
				want = append(want, k)
			}
		}
		got := e.listAll(t, prefix, startAfter, pageSize)
		var gotKeys []string
		for _, o := range got {
			gotKeys = append(gotKeys, o.Key)
			if d, ok := data[o.Key]; ok && o.Size != int64(len(d)) {
				t.Errorf("%s: %q is listed with size %d, want %d", what, o.Key, o.Size, len(d))
			}
		}
		if !slices.Equal(gotKeys, want) {
			missing, extra := diffKeys(want, gotKeys)
			t.Errorf("%s (prefix %q, after %q, pages of %d): %d keys listed, want %d; missing %q; not written or listed twice %q",
				what, prefix, startAfter, pageSize, len(gotKeys), len(want), missing, extra)
		}
	}
	wantList("whole prefix", e.prefix, "", 1000)
	wantList("whole prefix in small pages", e.prefix, "", 7)
	r := mathrand.New(mathrand.NewPCG(seed, 1))
	for range 12 {
		k := keys[r.IntN(len(keys))]
		wantList("after a key", e.prefix, k, 50)
		segs := strings.Split(strings.TrimPrefix(k, e.prefix), "/")
		n := 1 + r.IntN(len(segs))
		p := e.prefix + strings.Join(segs[:n], "/")
		if n < len(segs) {
			wantList("by segments", p+"/", "", 1000)
		}
		// A prefix that ends inside a segment, on a rune boundary.
		cut := len(e.prefix) + r.IntN(len(k)-len(e.prefix)) + 1
		for !utf8.ValidString(k[:cut]) {
			cut--
		}
		wantList("by a partial segment", k[:cut], "", 1000)
	}

	for _, k := range keys {
		if err := e.s.DeleteObject(t.Context(), k); err != nil {
			t.Fatalf("DeleteObject(%q) = %v", k, err)
		}
		_, err := e.s.StatObject(t.Context(), k)
		wantErr(t, fmt.Sprintf("StatObject(%q) after DeleteObject", k), err, store.ErrNotFound)
	}
	if got := e.listAll(t, e.prefix, "", 1000); len(got) != 0 {
		t.Errorf("after every key was deleted, %d objects are listed, such as %q", len(got), got[0].Key)
	}
}

// listAll lists every object under prefix after startAfter, in pages of
// pageSize, checking that pages are in ascending byte order.
func (e env) listAll(t *testing.T, prefix, startAfter string, pageSize int) []store.ObjectInfo {
	t.Helper()
	var all []store.ObjectInfo
	for {
		res, err := e.s.ListObjects(t.Context(), prefix, startAfter, pageSize)
		if err != nil {
			t.Fatalf("ListObjects(%q, %q, %d) = %v", prefix, startAfter, pageSize, err)
		}
		if len(res.Objects) > pageSize {
			t.Fatalf("ListObjects(%q, %q, %d) returned %d objects", prefix, startAfter, pageSize, len(res.Objects))
		}
		for _, o := range res.Objects {
			if o.Key <= startAfter {
				t.Fatalf("ListObjects(%q, %q, %d) returned %q, not after %q in byte order", prefix, startAfter, pageSize, o.Key, startAfter)
			}
			startAfter = o.Key
		}
		all = append(all, res.Objects...)
		if !res.IsTruncated {
			return all
		}
		if len(res.Objects) == 0 {
			t.Fatalf("ListObjects(%q, %q, %d) is truncated but empty", prefix, startAfter, pageSize)
		}
	}
}

// diffKeys returns the keys of want not in got, and those of got not in
// want or in it more often.
func diffKeys(want, got []string) (missing, extra []string) {
	count := map[string]int{}
	for _, k := range want {
		count[k]++
	}
	for _, k := range got {
		count[k]--
	}
	for k, c := range count {
		switch {
		case c > 0:
			missing = append(missing, k)
		case c < 0:
			extra = append(extra, k)
		}
	}
	slices.Sort(missing)
	slices.Sort(extra)
	return missing, extra
}
