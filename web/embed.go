// Package web serves ferry's browser page: a TypeScript page (src/) that
// uploads files with UploadService's unary chunk RPCs over gRPC-Web, and
// lists, downloads and deletes objects. Browsers cannot stream request
// bodies, so the page sends one chunk per PutChunk call, several at once.
//
// The page is built with esbuild (scripts/web.sh, from src/ and the
// TypeScript that scripts/gen-proto.sh generates into src/gen/) into dist/,
// which is committed and embedded into the ferry binary here: serving the
// page needs no Node.js. CI rebuilds dist/ and fails when it differs from
// what is committed (bash scripts/web.sh --check).
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

//go:embed dist
var dist embed.FS

// Assets returns the built page: index.html, app.js, crc-worker.js and
// style.css at its root.
func Assets() fs.FS {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		// dist is embedded at build time; fs.Sub fails only on a bad name.
		panic(err)
	}
	return sub
}

// Options configures [Handler]. The zero value serves a page that talks
// to its own origin only.
type Options struct {
	// PageServers are the origins, besides the page's own, that the page
	// may send RPCs to, each as [ParseOrigin] returns it (such as
	// "https://ferry.example.com:8443"): the page's Content-Security-Policy
	// lists them in connect-src after 'self', and the page offers them
	// under Settings. A person may still choose any server in the page,
	// but the browser refuses to connect to one that is not listed, and the
	// page says so. Default: none. Handler panics on an entry that is not
	// such an origin; check operators' input with ParseOrigin first.
	PageServers []string
}

// serversMeta is the tag of src/index.html that Handler fills with
// Options.PageServers (space-separated), for the page to read.
const serversMeta = `<meta name="ferry-page-servers" content="">`

// Handler returns an http.Handler that serves the page's files for GET and
// HEAD requests: index.html for "/" (and "/index.html"), app.js,
// crc-worker.js and style.css. Other methods get 405 Method Not Allowed; a
// path that is not valid UTF-8, holds a control character (such as NUL)
// or a backslash, or has an empty, "." or ".." element gets 400 Bad
// Request; any other path the page does not have gets 404 Not Found; all
// three with a one-line text/plain message. A file is served with
// Cache-Control: no-cache and an ETag (a hash of its content), so the
// browser revalidates it on every load (304 Not Modified when unchanged)
// and picks up a new binary's page at once, and with a
// Content-Security-Policy that lets the page load only its own scripts and
// connect only to its own origin and to opts.PageServers. Every response
// carries X-Content-Type-Options: nosniff. Mount it at "/" beside the RPC
// handlers: their paths are more specific patterns.
//
// Handler panics when opts.PageServers holds an entry that [ParseOrigin]
// does not return unchanged.
func Handler(opts Options) http.Handler {
	for _, o := range opts.PageServers {
		if got, err := ParseOrigin(o); err != nil || got != o {
			panic(fmt.Sprintf("web.Handler: page server %q is not an origin as ParseOrigin returns it", o))
		}
	}
	csp := contentSecurityPolicy(opts.PageServers)
	files := map[string]*file{}
	err := fs.WalkDir(Assets(), ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(Assets(), name)
		if err != nil {
			return err
		}
		if name == "index.html" {
			if !bytes.Contains(b, []byte(serversMeta)) {
				return fmt.Errorf("index.html lacks %s", serversMeta)
			}
			filled := fmt.Sprintf(`<meta name="ferry-page-servers" content="%s">`, html.EscapeString(strings.Join(opts.PageServers, " ")))
			b = bytes.Replace(b, []byte(serversMeta), []byte(filled), 1)
		}
		sum := sha256.Sum256(b)
		files["/"+name] = &file{
			name:        name,
			content:     b,
			etag:        `"` + hex.EncodeToString(sum[:12]) + `"`,
			contentType: mime.TypeByExtension(path.Ext(name)),
		}
		return nil
	})
	if err != nil {
		// The page is embedded at build time: this is a broken build.
		panic("web.Handler: " + err.Error())
	}
	files["/"] = files["/index.html"]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		h := w.Header()
		h.Set("X-Content-Type-Options", "nosniff")
		if reason := badPath(r.URL.Path); reason != "" {
			http.Error(w, "bad request: the path "+reason, http.StatusBadRequest)
			return
		}
		f := files[r.URL.Path]
		if f == nil {
			http.Error(w, "not found: the page has no such file", http.StatusNotFound)
			return
		}
		h.Set("Cache-Control", "no-cache")
		h.Set("Content-Security-Policy", csp)
		h.Set("ETag", f.etag)
		if f.contentType != "" {
			h.Set("Content-Type", f.contentType)
		}
		// ServeContent answers If-None-Match (304), HEAD and ranges.
		http.ServeContent(w, r, f.name, time.Time{}, bytes.NewReader(f.content))
	})
}

// file is one of the page's files as Handler serves it.
type file struct {
	name        string
	content     []byte
	etag        string
	contentType string
}

// badPath says why path is not a well-formed path of the page's files
// ("" when it is one): what follows the leading "/" must be valid UTF-8
// without control characters or backslashes, and each of its
// slash-separated elements must be other than "", "." and "..".
func badPath(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return "does not start with /"
	case !utf8.ValidString(p):
		return "is not valid UTF-8"
	case strings.ContainsFunc(p, unicode.IsControl):
		return "holds a control character"
	case strings.Contains(p, `\`):
		return "holds a backslash"
	}
	if p == "/" {
		return ""
	}
	for _, elem := range strings.Split(p[1:], "/") {
		if elem == "" || elem == "." || elem == ".." {
			return `has an empty, "." or ".." element`
		}
	}
	return ""
}

// contentSecurityPolicy is the page's Content-Security-Policy: it loads
// only its own scripts (and compiles the WebAssembly of its CRC32C
// library), and its requests may go only to its own origin and to
// servers (the operator's --page-server origins): the browser refuses any
// fetch to another origin, so a token the page holds cannot reach one
// even if the page were made to try.
func contentSecurityPolicy(servers []string) string {
	connect := strings.Join(append([]string{"'self'"}, servers...), " ")
	return "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; " +
		"connect-src " + connect + "; img-src 'self' data: blob:; object-src 'none'; " +
		"base-uri 'none'; frame-ancestors 'none'; form-action 'none'"
}
