package s3store

import (
	"context"
	"strings"

	"github.com/minio/minio-go/v7"

	"github.com/ferryhq/ferry/store"
)

// ListObjects implements [store.Store]. maxKeys outside 1 to 1000 is taken
// as 1000. A page is usually one ListObjectsV2 request; see listRanges for
// when it takes more.
func (s *Store) ListObjects(ctx context.Context, prefix, startAfter string, maxKeys int) (store.ListResult, error) {
	if maxKeys < 1 || maxKeys > maxListKeys {
		maxKeys = maxListKeys
	}
	var res store.ListResult
	for _, r := range listRanges(prefix, startAfter) {
		want := maxKeys - len(res.Objects) // may be 0: is there any more?
		ask := min(want+1, maxListKeys)
		got, err := s.listRange(ctx, r, ask)
		if err != nil {
			return store.ListResult{}, err
		}
		res.Objects = append(res.Objects, got...)
		switch {
		case len(res.Objects) > maxKeys:
			res.Objects, res.IsTruncated = res.Objects[:maxKeys], true
			return res, nil
		case len(got) == ask && ask == want:
			// A full page of maxKeys (1000): whether more follow is one
			// more key after its last.
			more, err := s.ListObjects(ctx, prefix, res.Objects[len(res.Objects)-1].Key, 1)
			if err != nil {
				return store.ListResult{}, err
			}
			res.IsTruncated = len(more.Objects) > 0
			return res, nil
		}
	}
	return res, nil
}

// listRange is one range of a listing: the keys under prefix after
// startAfter, or (exact) only the key prefix itself.
type listRange struct {
	prefix, startAfter string
	exact              bool
}

// listRanges splits the keys under prefix that sort after startAfter into
// ranges, in key order, that MinIO lists correctly.
//
// MinIO walks a directory tree and, resuming after startAfter inside
// "x/", keeps at each level the entries from the segment "x" on,
// including siblings such as "x-b" or "x b" that sort between "x" and
// "x/" by bytes and so before startAfter. It skips them, but counts them
// against the request's limit (max-keys + 5 and a little more): when they
// hold that many objects, the rest of "x/" is silently left out of the
// answer, which may even say it is not truncated. So "d/a-b/1" to
// "d/a-b/8" and "d/a/x", "d/a/y", "d/z" listed with prefix "d/", after
// "d/a/x", max-keys 2, gave only "d/z" (ListObjectsV2 and V1 alike). A
// startAfter with no "/" past its prefix's directory has no such
// siblings. So the listing after "p/a/b/c" under "p/" is, in order: the
// keys under "p/a/b/" after "p/a/b/c", the key "p/a/b0", the keys under
// "p/a/" after "p/a/b0", the key "p/a0", and the keys under "p/" after
// "p/a0" ("0" is the byte after "/", so "p/a/b0" is the first key past
// "p/a/b/"). The ranges after the first are read only when the first does
// not fill the page, one or two requests each, for at most
// [store.MaxKeySegments] levels.
func listRanges(prefix, startAfter string) []listRange {
	if startAfter == "" || !strings.HasPrefix(startAfter, prefix) {
		return []listRange{{prefix: prefix, startAfter: startAfter}}
	}
	var slashes []int
	for i := len(prefix); i < len(startAfter); i++ {
		if startAfter[i] == '/' {
			slashes = append(slashes, i)
		}
	}
	if len(slashes) == 0 {
		return []listRange{{prefix: prefix, startAfter: startAfter}}
	}
	if len(slashes) > store.MaxKeySegments {
		// Deeper than any key ferry writes (a page token a client made
		// up, or another tool's object): split at the deepest levels
		// only, so a page costs at most 2*MaxKeySegments+1 requests.
		slashes = slashes[len(slashes)-store.MaxKeySegments:]
	}
	ranges := []listRange{{prefix: startAfter[:slashes[len(slashes)-1]+1], startAfter: startAfter}}
	for k := len(slashes) - 1; k >= 0; k-- {
		past := startAfter[:slashes[k]] + "0" // the first key past startAfter[:slashes[k]+1]
		parent := prefix
		if k > 0 {
			parent = startAfter[:slashes[k-1]+1]
		}
		ranges = append(ranges, listRange{prefix: past, exact: true}, listRange{prefix: parent, startAfter: past})
	}
	return ranges
}

// listRange lists up to n objects of r in one ListObjectsV2 request.
func (s *Store) listRange(ctx context.Context, r listRange, n int) ([]store.ObjectInfo, error) {
	if n <= 0 {
		return nil, nil
	}
	if r.exact {
		n = 1 // the key itself sorts first under it
	}
	fetchOwner := false
	lopts := minio.ListObjectsOptions{
		Prefix:     r.prefix,
		StartAfter: r.startAfter,
		MaxKeys:    n,
		Recursive:  true,
		FetchOwner: &fetchOwner,
	}
	if dir, last := splitLast(r.prefix); !r.exact && (last == "." || last == "..") {
		// MinIO refuses a prefix or start-after whose last segment is "."
		// or ".." (XMinioInvalidResourceName), though keys may start so
		// ("a/..b"). The keys under it are those of its directory from just
		// below it ("a/.-" and the largest character, for "a/.."), up to
		// the first past it.
		lopts.Prefix = dir
		lopts.StartAfter = max(r.startAfter, dir+last[:len(last)-1]+"-\U0010FFFF")
	}
	var objs []store.ObjectInfo
	for oi := range s.core.ListObjectsIter(ctx, s.bucket, lopts) {
		if oi.Err != nil {
			return nil, mapError("ListObjects", r.prefix, oi.Err)
		}
		if oi.Key < r.prefix {
			continue // below a prefix ending in a "." segment (see above)
		}
		if r.exact && oi.Key != r.prefix || !strings.HasPrefix(oi.Key, r.prefix) {
			break
		}
		info := toObjectInfo(oi)
		info.Metadata = nil
		objs = append(objs, info)
		if len(objs) == n {
			break // before the iterator asks for another page
		}
	}
	if err := ctx.Err(); err != nil {
		// The iterator stops without an error when ctx ends.
		return nil, mapError("ListObjects", r.prefix, err)
	}
	return objs, nil
}

// splitLast splits prefix after its last "/": the directory (with its
// "/", or "") and the last segment.
func splitLast(prefix string) (dir, last string) {
	i := strings.LastIndexByte(prefix, '/')
	return prefix[:i+1], prefix[i+1:]
}
