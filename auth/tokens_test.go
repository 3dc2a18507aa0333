package auth

import (
	"strings"
	"testing"
)

func TestParseTokens(t *testing.T) {
	t.Parallel()
	file := `{"tokens": [
		{"name": "alice", "token": "alice-secret-0123456789", "read": ["team-a/", "shared/"], "write": ["team-a/"], "max_uploads": 3},
		{"name": "bob", "sha256": "` + HashToken("bob-secret-0123456789") + `", "read": ["team-b/"]},
		{"name": "all", "token": "all-secret-0123456789", "write": [""]}
	]}`
	tokens, err := ParseTokens(strings.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if tokens.Len() != 3 {
		t.Fatalf("Len = %d, want 3", tokens.Len())
	}
	for _, c := range []struct {
		secret, name string
	}{
		{"alice-secret-0123456789", "alice"},
		{"bob-secret-0123456789", "bob"},
		{"all-secret-0123456789", "all"},
	} {
		p, ok := tokens.Authenticate(c.secret)
		if !ok || p.Name != c.name {
			t.Errorf("Authenticate(%q) = %v, %v; want %s", c.secret, p, ok, c.name)
		}
	}
	for _, secret := range []string{"", "alice-secret-012345678", "alice-secret-0123456789 ", HashToken("bob-secret-0123456789"), "ALICE-SECRET-0123456789"} {
		if p, ok := tokens.Authenticate(secret); ok {
			t.Errorf("Authenticate(%q) = %s, want no match", secret, p.Name)
		}
	}

	alice, _ := tokens.Authenticate("alice-secret-0123456789")
	bob, _ := tokens.Authenticate("bob-secret-0123456789")
	all, _ := tokens.Authenticate("all-secret-0123456789")
	if alice.MaxUploads != 3 {
		t.Errorf("alice MaxUploads = %d, want 3", alice.MaxUploads)
	}
	for _, c := range []struct {
		p                     *Principal
		key                   string
		read, write, listable bool
	}{
		{alice, "team-a/x", true, true, true},
		{alice, "shared/x", true, false, true},
		{alice, "team-b/x", false, false, false},
		{alice, "team-ab/x", false, false, false},
		{alice, "team-a", false, false, false},
		{alice, "", false, false, false},
		{bob, "team-b/x", true, false, true},
		{bob, "team-a/x", false, false, false},
		{all, "anything/at/all", false, true, false},
	} {
		if got := c.p.CanRead(c.key); got != c.read {
			t.Errorf("%s.CanRead(%q) = %v, want %v", c.p.Name, c.key, got, c.read)
		}
		if got := c.p.CanWrite(c.key); got != c.write {
			t.Errorf("%s.CanWrite(%q) = %v, want %v", c.p.Name, c.key, got, c.write)
		}
		if got := c.p.CanList(c.key); got != c.listable {
			t.Errorf("%s.CanList(%q) = %v, want %v", c.p.Name, c.key, got, c.listable)
		}
	}
}

func TestParseTokensErrors(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, file, want string
	}{
		{"not json", `tokens:`, "not a token file"},
		{"unknown field", `{"tokens":[{"name":"a","token":"aaaaaaaaaaaaaaaa","read":[""],"wirte":[""]}]}`, "unknown field"},
		{"trailing data", `{"tokens":[{"name":"a","token":"aaaaaaaaaaaaaaaa","read":[""]}]} {}`, "data after"},
		{"empty", `{"tokens":[]}`, "no tokens"},
		{"no name", `{"tokens":[{"token":"aaaaaaaaaaaaaaaa","read":[""]}]}`, "name is missing"},
		{"short secret", `{"tokens":[{"name":"a","token":"short","read":[""]}]}`, "at least 16"},
		{"both secrets", `{"tokens":[{"name":"a","token":"aaaaaaaaaaaaaaaa","sha256":"` + HashToken("x") + `","read":[""]}]}`, "exactly one"},
		{"no secret", `{"tokens":[{"name":"a","read":[""]}]}`, "exactly one"},
		{"bad hash", `{"tokens":[{"name":"a","sha256":"abc","read":[""]}]}`, "64 hex digits"},
		{"no rights", `{"tokens":[{"name":"a","token":"aaaaaaaaaaaaaaaa"}]}`, "grants nothing"},
		{"reserved prefix", `{"tokens":[{"name":"a","token":"aaaaaaaaaaaaaaaa","read":[".ferry/"]}]}`, "reserved"},
		{"negative limit", `{"tokens":[{"name":"a","token":"aaaaaaaaaaaaaaaa","read":[""],"max_uploads":-1}]}`, "negative"},
		{"same name", `{"tokens":[{"name":"a","token":"aaaaaaaaaaaaaaaa","read":[""]},{"name":"a","token":"bbbbbbbbbbbbbbbb","read":[""]}]}`, "used twice"},
		{"same secret", `{"tokens":[{"name":"a","token":"aaaaaaaaaaaaaaaa","read":[""]},{"name":"b","sha256":"` + HashToken("aaaaaaaaaaaaaaaa") + `","read":[""]}]}`, "same secret"},
	} {
		_, err := ParseTokens(strings.NewReader(c.file))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: ParseTokens = %v, want an error containing %q", c.name, err, c.want)
		}
	}
}
