package reliability

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	idem "github.com/idemkit/idem/core"
	idemredis "github.com/idemkit/idem/storage/redis"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/redis/go-redis/v9"
)

// outageBackend is a store whose server the test can take away and bring
// back.
type outageBackend struct {
	store      idem.Store
	down, up   func(t *testing.T)
	storeLabel string
}

// TestStoreOutage (B22, B23): the store becomes unreachable while clients
// send requests to every adapter. A fail-closed engine answers the requests
// that need the store with 503 and Retry-After without running their
// handlers, and serves normally again when the store returns, without a
// restart. A fail-open engine runs the handlers and reports each untracked
// run.
func TestStoreOutage(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		outage(t, redisOutage(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		outage(t, postgresOutage(t))
	})
}

// redisOutage runs a redis-server of its own on a free port, which down
// stops and up starts again (empty: it keeps nothing on disk).
func redisOutage(t *testing.T) outageBackend {
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server is not on the PATH; install it to run the Redis outage test")
	}
	addr := unusedPort(t)
	port := strconv.Itoa(addr.Port)
	// go-redis logs every failed dial of the outage; the test checks the
	// outcomes itself.
	quietRedis.Do(func() { redis.SetLogger(discardLogger{}) })
	var cmd *exec.Cmd
	start := func(t *testing.T) {
		cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
		if err := cmd.Start(); err != nil {
			t.Fatalf("start redis-server: %v", err)
		}
		exited := make(chan error, 1)
		go func(c *exec.Cmd) { exited <- c.Wait() }(cmd)
		deadline := time.Now().Add(10 * time.Second)
		for {
			// Ready means this redis-server answers, not merely that
			// something listens on the port.
			err := redisPing(addr.String())
			if err == nil {
				return
			}
			select {
			case werr := <-exited:
				cmd = nil
				t.Fatalf("redis-server on %s exited before it answered (%v): %v", addr, werr, err)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("redis-server on %s does not answer: %v", addr, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	stop := func(*testing.T) {
		if cmd != nil {
			_ = cmd.Process.Kill()
			// The goroutine start left waits for the process; wait until
			// the port is free again.
			for i := 0; i < 250 && redisPing(addr.String()) == nil; i++ {
				time.Sleep(20 * time.Millisecond)
			}
			cmd = nil
		}
	}
	start(t)
	t.Cleanup(func() { stop(t) })
	client := newRedisClient(t, "redis://"+addr.String()+"/0")
	store, err := idemredis.New(t.Context(), client, idemredis.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return outageBackend{store: store, down: stop, up: start,
		storeLabel: "redis-server on " + addr.String()}
}

// unusedPort returns a free loopback port below the kernel's range of
// ephemeral ports, so that no listener of a test running beside this one
// (they bind port 0) takes it between this check and redis-server's bind.
func unusedPort(t *testing.T) *net.TCPAddr {
	t.Helper()
	for range 100 {
		port := 20000 + rand.IntN(12000)
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port}
	}
	t.Fatal("no free port in 20000-31999")
	return nil
}

// redisPing sends PING to the Redis server at addr and checks its PONG.
func redisPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 7)
	if _, err := io.ReadFull(c, buf); err != nil {
		return err
	}
	if string(buf) != "+PONG\r\n" {
		return fmt.Errorf("answered %q to PING", buf)
	}
	return nil
}

var quietRedis sync.Once

// discardLogger is a go-redis logger that logs nothing.
type discardLogger struct{}

func (discardLogger) Printf(context.Context, string, ...any) {}

// postgresOutage puts a TCP proxy between the store's pool and the
// database; down cuts every connection and refuses new ones, up lets them
// through again.
func postgresOutage(t *testing.T) outageBackend {
	url := postgresURL(t)
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	p := newProxy(t, net.JoinHostPort(cfg.ConnConfig.Host, strconv.Itoa(int(cfg.ConnConfig.Port))))
	host, port, _ := net.SplitHostPort(p.addr())
	cfg.ConnConfig.Host = host
	n, _ := strconv.Atoi(port)
	cfg.ConnConfig.Port = uint16(n)
	cfg.ConnConfig.Fallbacks = nil
	cfg.ConnConfig.ConnectTimeout = time.Second
	cfg.MaxConns = 16
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pool.Close)
	f := newPostgresOn(t, pool, "rel_"+randomHex(6))
	return outageBackend{store: f.store, down: func(*testing.T) { p.cut() }, up: func(*testing.T) { p.restore() },
		storeLabel: "PostgreSQL through a proxy on " + p.addr()}
}

// proxy forwards TCP connections to target until cut.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	down   bool
	conns  map[net.Conn]struct{}
}

func newProxy(t *testing.T, target string) *proxy {
	p := &proxy{ln: listen(t), target: target, conns: map[net.Conn]struct{}{}}
	go p.serve()
	t.Cleanup(func() {
		p.ln.Close()
		p.cut()
	})
	return p
}

func (p *proxy) addr() string { return p.ln.Addr().String() }

func (p *proxy) serve() {
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		go p.forward(c)
	}
}

// track registers c, or closes it and reports false while the proxy is down.
func (p *proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		c.Close()
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *proxy) forward(c net.Conn) {
	if !p.track(c) {
		return
	}
	up, err := net.DialTimeout("tcp", p.target, time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !p.track(up) {
		c.Close()
		return
	}
	go func() { _, _ = io.Copy(up, c); up.Close(); c.Close() }()
	_, _ = io.Copy(c, up)
	c.Close()
	up.Close()
}

// cut closes every connection and refuses new ones.
func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = true
	for c := range p.conns {
		c.Close()
	}
	clear(p.conns)
}

// restore lets connections through again.
func (p *proxy) restore() {
	p.mu.Lock()
	p.down = false
	p.mu.Unlock()
}

// outageServer is one adapter serving one engine during the outage.
type outageServer struct {
	name     string
	failOpen bool
	base     string
	ex       *executions
	ev       *events
}

// Phases of the outage test. A request counts for a phase when it was both
// sent and answered in it. While the store goes away or comes back
// (transition), and across a change of phase, either answer is right.
const (
	phaseBefore = iota
	phaseDown
	phaseUp
	phaseTransition
	straddled
)

type outageResult struct {
	server *outageServer
	key    string
	phase  int
	ans    answer
	err    error
}

func outage(t *testing.T, b outageBackend) {
	var servers []*outageServer
	for _, failOpen := range []bool{false, true} {
		ev := &events{}
		engine := newEngine(t, idem.Config{Store: b.store, FailOpen: failOpen, StoreTimeout: time.Second, Observer: ev})
		for _, ad := range adapters {
			s := &outageServer{name: fmt.Sprintf("%s/fail-open=%v", ad.name, failOpen), failOpen: failOpen, ex: newExecutions(), ev: ev}
			s.base = ad.serve(t, engine, idem.Route{}, orderHandler(s.ex, time.Millisecond))
			servers = append(servers, s)
		}
	}
	client := newClient(t, 32)
	for _, s := range servers { // the store works, and connections are open
		if a := mustPost(t, client, s.base, "warm-"+randomHex(6), nil); a.Status != http.StatusCreated {
			t.Fatalf("%s before the outage: %v", s.name, a)
		}
	}
	var phase atomic.Int32
	var seq atomic.Int64
	var mu sync.Mutex
	var results []outageResult
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := servers[(w+rand.IntN(len(servers)))%len(servers)]
				key := fmt.Sprintf("outage-%d", seq.Add(1))
				sent := int(phase.Load())
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				a, err := post(ctx, client, s.base, key, []byte(key))
				cancel()
				r := outageResult{server: s, key: key, phase: sent, ans: a, err: err}
				if int(phase.Load()) != sent || sent == phaseTransition {
					r.phase = straddled
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
			}
		})
	}
	time.Sleep(300 * time.Millisecond)
	phase.Store(phaseTransition)
	b.down(t)
	phase.Store(phaseDown)
	time.Sleep(2 * time.Second)
	phase.Store(phaseTransition)
	b.up(t)
	// Wait until every server has stored a request again: recovery without
	// a restart.
	deadline := time.Now().Add(15 * time.Second)
	for _, s := range servers {
		for {
			key := "probe-" + randomHex(6)
			a := mustPost(t, client, s.base, key, []byte(key))
			if a.Status == http.StatusCreated && mustPost(t, client, s.base, key, []byte(key)).replayed() {
				break
			}
			if time.Now().After(deadline) {
				close(stop)
				wg.Wait()
				t.Fatalf("%s: no recovery 15s after %s came back: last answer %v", s.name, b.storeLabel, a)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	phase.Store(phaseUp)
	time.Sleep(300 * time.Millisecond)
	close(stop)
	wg.Wait()

	type tally struct{ byPhase [5][2]int } // [phase][0: 201, 1: 503]
	tallies := map[*outageServer]*tally{}
	for _, s := range servers {
		tallies[s] = &tally{}
	}
	for _, r := range results {
		s := r.server
		if r.err != nil {
			t.Errorf("%s %s: %v", s.name, r.key, r.err)
			continue
		}
		ran := s.ex.of(r.key)
		switch {
		case r.ans.Status == http.StatusCreated && !r.ans.replayed():
			tallies[s].byPhase[r.phase][0]++
			if ran != 1 {
				t.Errorf("%s %s: answered 201 but the handler ran %d times", s.name, r.key, ran)
			}
		case r.ans.Status == http.StatusServiceUnavailable && !s.failOpen:
			tallies[s].byPhase[r.phase][1]++
			if r.ans.problemType() != idem.ProblemStoreUnavailable || r.ans.Header.Get("Retry-After") == "" {
				t.Errorf("%s %s: malformed 503: %v %v", s.name, r.key, r.ans, r.ans.Header)
			}
			if ran != 0 {
				t.Errorf("%s %s: answered 503 but the handler ran %d times (fail closed means it does not run)", s.name, r.key, ran)
			}
		default:
			t.Errorf("%s %s: unexpected answer %v in phase %d", s.name, r.key, r.ans, r.phase)
		}
	}
	for _, s := range servers {
		c := tallies[s].byPhase
		t.Logf("%s: before 201×%d; down 201×%d 503×%d; after 201×%d 503×%d; straddling 201×%d 503×%d",
			s.name, c[phaseBefore][0], c[phaseDown][0], c[phaseDown][1], c[phaseUp][0], c[phaseUp][1], c[straddled][0], c[straddled][1])
		if c[phaseBefore][1]+c[phaseUp][1] != 0 {
			t.Errorf("%s: 503 while %s was up; the store errors reported: %q", s.name, b.storeLabel, distinctErrors(s.ev, idem.StoreError))
		}
		if c[phaseDown][0]+c[phaseDown][1] == 0 {
			t.Errorf("%s: no request was answered while %s was down", s.name, b.storeLabel)
		}
		if !s.failOpen && c[phaseDown][0] != 0 {
			t.Errorf("%s: %d requests ran while %s was down", s.name, c[phaseDown][0], b.storeLabel)
		}
	}
	for _, failOpen := range []bool{false, true} {
		var execs int64
		var ev *events
		for _, s := range servers {
			if s.failOpen == failOpen {
				execs += s.ex.total.Load()
				ev = s.ev
			}
		}
		executed, untracked := len(ev.With(idem.Executed)), len(ev.With(idem.Untracked))
		if int64(executed+untracked) != execs {
			t.Errorf("fail-open=%v: %d handler runs, but %d executed and %d untracked events", failOpen, execs, executed, untracked)
		}
		if failOpen && untracked == 0 {
			t.Errorf("fail-open: no untracked run was reported during the outage")
		}
		if !failOpen && untracked != 0 {
			t.Errorf("fail-closed: %d untracked runs", untracked)
		}
		if !failOpen && len(ev.With(idem.StoreError)) == 0 {
			t.Errorf("fail-closed: the outage was never reported as a store error")
		}
		for _, e := range ev.Events() {
			if (e.Outcome == idem.Untracked || e.Outcome == idem.StoreError) && e.Err == nil {
				t.Errorf("fail-open=%v: %v event without its error", failOpen, e.Outcome)
			}
		}
	}
}
