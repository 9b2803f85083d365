//! `floor`: the traffic shapes of `fanout` with the gateway taken out, to measure what the
//! kernel's loopback TCP path alone costs on this machine.
//!
//! A writer process (a child of this one, `floor-writer`, standing in for the server: it binds
//! 127.0.0.1:0, accepts N connections, sets TCP_NODELAY and writes from `--writer-threads` plain
//! threads, like the server's workers) writes newline-terminated frames
//! `{"sent_at_ns":N,"seq":S,"pad":"xx..."}` straight into N loopback sockets, one write() per
//! frame; this process reads them with `--reader-threads` lean readers (each its own `mio::Poll`,
//! one read() per readiness event into a 4 KiB buffer, no WebSocket, no JSON parser). Reported:
//! frames written, received and lost, the latency receive time - `sent_at_ns` (the system clock,
//! shared by both processes), and the CPU per frame of the writer (user/system) and the readers.
//!
//! Why: a gateway bar such as "one publish to 10,000 subscribers, p99 <= 50 ms" or "<= 5 us of
//! server CPU per delivery at 150k deliveries/s" cannot be met on a machine whose bare kernel path
//! (no gateway at all, the same sockets, the same frames) is already above it; this scenario makes
//! that floor reproducible next to the `fanout` figures.
//!
//! Shapes (exclusive): burst `--messages K` (K rounds one second apart, one frame to every socket
//! per round, stamped at the round's start like the gateway's publish timestamp) and steady
//! `--rate R --duration D` (R frames/s in all, paced per 1 ms tick, round-robin over the sockets,
//! each frame stamped when written; a writer that falls behind still writes all R x D frames, the
//! report then shows the rate achieved and how far behind its schedule it fell).
//!
//! The writer is a separate process because it stands in for the server, and because one process
//! may hold at most 20,000 open files here: N writer-side plus N reader-side sockets would not fit
//! in one process for N = 10,000. Loopback only: the writer binds 127.0.0.1, the readers connect
//! to 127.0.0.1, nothing else is ever bound or connected. Every loop is bounded: a hard deadline
//! (the shape's nominal time + 30 s) stops the readers and kills the writer, and the run reports
//! what it got; the set-up (writer start, N connects and accepts) has its own 60 s bound.
//!
//! CPU figures are per process, from /proc/self/stat, over the writing (writer) and the reading
//! (readers): exact in total at 10 ms resolution, so tiny runs say little. There is deliberately
//! no whole-machine figure: /proc/stat is tick-sampled on this kernel (HZ = 250, tick CPU
//! accounting) and aliases with the 1 ms pacing, over- or under-counting by whole seconds.

use std::{
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    process::{Child, ChildStdin, ExitCode, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        mpsc::{self, RecvTimeoutError},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context as _};
use hdrhistogram::Histogram;
use mio::{Events, Interest, Poll, Token};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::{scrape, stats, Progress};

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("shape").required(true).args(["messages", "rate"])))]
pub struct Args {
    /// Sockets (connections) between the writer and the readers.
    #[arg(long, default_value_t = 1000)]
    pub connections: usize,
    /// Burst shape: K rounds one second apart, each one frame to every socket.
    #[arg(long)]
    pub messages: Option<u64>,
    /// Steady shape: frames per second in all (round-robin over the sockets); needs --duration.
    #[arg(long, requires = "duration")]
    pub rate: Option<f64>,
    /// Steady shape: seconds of writing; needs --rate.
    #[arg(long, requires = "rate")]
    pub duration: Option<f64>,
    /// Bytes per frame, newline included (padded to it).
    #[arg(long, default_value_t = 300)]
    pub frame_bytes: usize,
    /// Writer threads in the writer process (the server's workers: 2 here).
    #[arg(long, default_value_t = 2)]
    pub writer_threads: usize,
    /// Reader threads in this process, each with its own mio::Poll over its share of the sockets.
    #[arg(long, default_value_t = 2)]
    pub reader_threads: usize,
    /// Print the result as JSON on stdout (the human summary then goes to stderr).
    #[arg(long)]
    pub json: bool,
    /// No live progress line.
    #[arg(long)]
    pub quiet: bool,
}

/// The writer process's parameters (`floor-writer`, started by `floor`).
#[derive(clap::Args, Debug)]
pub struct WriterArgs {
    #[arg(long)]
    pub connections: usize,
    #[arg(long)]
    pub writer_threads: usize,
    #[arg(long)]
    pub frame_bytes: usize,
    /// Burst rounds (0: the steady shape).
    #[arg(long, default_value_t = 0)]
    pub messages: u64,
    /// Steady shape: frames in all.
    #[arg(long, default_value_t = 0)]
    pub frames: u64,
    /// Steady shape: seconds of writing.
    #[arg(long, default_value_t = 0.0)]
    pub duration: f64,
    /// Seconds after which the process exits whatever it is doing.
    #[arg(long)]
    pub max_seconds: f64,
}

/// The writer's reports, one JSON line each on its stdout.
#[derive(Debug, Serialize, Deserialize)]
// Externally tagged: an internally tagged enum is buffered before it is matched, and buffered
// numbers do not parse back as floats with serde_json's `arbitrary_precision` (which the gateway
// enables to pass client numbers on exactly).
#[serde(rename_all = "snake_case")]
enum Event {
    Listening { port: u16 },
    Accepted { connections: usize },
    Done(WriterReport),
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct WriterReport {
    frames_written: u64,
    /// Frames not written because their socket had failed before.
    frames_skipped: u64,
    write_errors: u64,
    first_error: Option<String>,
    /// CPU of the whole writer process from the first write to the last (accepts excluded).
    cpu: Cpu,
    writing_seconds: f64,
    /// Steady shape: the furthest behind its 1 ms schedule a writer thread fell.
    max_lag_ms: f64,
}

/// Seconds the set-up (writer start, N connects and accepts) may take.
const SETUP_SECONDS: u64 = 60;
/// The hard deadline: the shape's nominal time plus this.
const GRACE_SECONDS: f64 = 30.0;
/// Once the writer is done (or gone), how long without a new frame before giving up.
const STALL: Duration = Duration::from_secs(5);
const READ_BUFFER: usize = 4096;
/// Reads of one socket per wake-up before moving on (it is visited again on the next loop).
const MAX_READS_PER_WAKE: usize = 16;
const POLL_TIMEOUT: Duration = Duration::from_millis(100);
/// Open files each process needs besides its sockets.
const SPARE_FILES: u64 = 64;

#[derive(Clone, Copy, Debug)]
enum Shape {
    Burst { rounds: u64 },
    Steady { rate: f64, duration: f64, frames: u64 },
}

impl Shape {
    fn of(args: &Args) -> anyhow::Result<Shape> {
        match (args.messages, args.rate, args.duration) {
            (Some(rounds), None, None) => {
                ensure!((1..=3600).contains(&rounds), "--messages must be 1..=3600");
                Ok(Shape::Burst { rounds })
            }
            (None, Some(rate), Some(duration)) => {
                ensure!(rate > 0.0 && rate <= 10_000_000.0, "--rate must be in (0, 10000000]");
                ensure!(duration > 0.0 && duration <= 3600.0, "--duration must be in (0, 3600]");
                let frames = (rate * duration).round() as u64;
                ensure!(frames > 0, "--rate x --duration must be at least one frame");
                Ok(Shape::Steady { rate, duration, frames })
            }
            _ => bail!("give either --messages K (burst) or --rate R --duration D (steady)"),
        }
    }

    fn expected(&self, connections: usize) -> u64 {
        match *self {
            Shape::Burst { rounds } => rounds * connections as u64,
            Shape::Steady { frames, .. } => frames,
        }
    }

    /// Seconds the writing should take.
    fn nominal_seconds(&self) -> f64 {
        match *self {
            Shape::Burst { rounds } => rounds as f64,
            Shape::Steady { duration, .. } => duration,
        }
    }
}

/// User and system CPU seconds of this whole process (every thread, exited ones included), from
/// /proc/self/stat (USER_HZ = 100 on Linux, as in scrape.rs, whose helpers only have sums). Their
/// total is the scheduler's exact run time (10 ms resolution); the user/system split comes from
/// tick samples (HZ = 250 here).
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
struct Cpu {
    user_s: f64,
    system_s: f64,
}

impl Cpu {
    fn now() -> anyhow::Result<Cpu> {
        let (user_s, system_s) = scrape::proc_cpu("self").context("reading /proc/self/stat")?;
        Ok(Cpu { user_s, system_s })
    }

    fn since(self, before: Cpu) -> Cpu {
        Cpu { user_s: self.user_s - before.user_s, system_s: self.system_s - before.system_s }
    }

    fn total(&self) -> f64 {
        self.user_s + self.system_s
    }

    /// (total, user, system) microseconds per frame.
    fn per_frame(&self, frames: u64) -> Option<(f64, f64, f64)> {
        (frames > 0).then(|| {
            let f = frames as f64;
            (self.total() * 1e6 / f, self.user_s * 1e6 / f, self.system_s * 1e6 / f)
        })
    }
}

/// One frame, padded to `frame_bytes`, in a buffer reused from frame to frame.
struct Framer {
    buf: Vec<u8>,
    frame_bytes: usize,
}

impl Framer {
    fn new(frame_bytes: usize) -> Framer {
        Framer { buf: Vec::with_capacity(frame_bytes + 64), frame_bytes }
    }

    fn build(&mut self, sent_at_ns: u64, seq: u64) -> &[u8] {
        self.buf.clear();
        // Writing into a Vec cannot fail.
        let _ = write!(self.buf, "{{\"sent_at_ns\":{sent_at_ns},\"seq\":{seq},\"pad\":\"");
        let fill = self.frame_bytes.saturating_sub(self.buf.len() + 3);
        self.buf.resize(self.buf.len() + fill, b'x');
        self.buf.extend_from_slice(b"\"}\n");
        &self.buf
    }
}

/// (sent_at_ns, seq) of one line, without its newline.
fn parse_frame(line: &[u8]) -> Option<(u64, u64)> {
    let rest = line.strip_prefix(b"{\"sent_at_ns\":")?;
    let (sent_at_ns, rest) = parse_u64(rest)?;
    let rest = rest.strip_prefix(b",\"seq\":")?;
    let (seq, _) = parse_u64(rest)?;
    Some((sent_at_ns, seq))
}

fn parse_u64(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let digits = bytes.iter().take_while(|c| c.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let mut value = 0u64;
    for &c in &bytes[..digits] {
        value = value.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some((value, &bytes[digits..]))
}

fn sleep_until(due: Instant) {
    let now = Instant::now();
    if due > now {
        std::thread::sleep(due - now);
    }
}

// ---------------------------------------------------------------------------------------------
// The writer process.

/// What one writer thread did.
#[derive(Default)]
struct WriteTally {
    written: u64,
    skipped: u64,
    errors: u64,
    first_error: Option<String>,
    max_lag: Duration,
}

impl WriteTally {
    fn failed(&mut self, index: usize, error: &io::Error) {
        self.errors += 1;
        if self.first_error.is_none() {
            self.first_error = Some(format!("write to socket {index}: {error}"));
        }
    }
}

/// One writer thread's sockets; a socket whose write failed is skipped from then on.
struct WriterShare {
    sockets: Vec<TcpStream>,
    alive: Vec<bool>,
}

impl WriterShare {
    /// Burst: `rounds` rounds one second apart from `start`, one frame (stamped at the round's
    /// start, numbered by the round) to every socket per round.
    fn burst(&mut self, rounds: u64, start: Instant, frame_bytes: usize, hard: Instant) -> WriteTally {
        let mut tally = WriteTally::default();
        let mut framer = Framer::new(frame_bytes);
        for round in 0..rounds {
            let due = start + Duration::from_secs(round);
            if due >= hard {
                break;
            }
            sleep_until(due);
            let frame = framer.build(stats::now_ns(), round);
            for (index, socket) in self.sockets.iter_mut().enumerate() {
                if !self.alive[index] {
                    tally.skipped += 1;
                    continue;
                }
                match socket.write_all(frame) {
                    Ok(()) => tally.written += 1,
                    Err(error) => {
                        self.alive[index] = false;
                        tally.failed(index, &error);
                    }
                }
            }
        }
        tally
    }

    /// Steady: `quota` frames over `ticks` 1 ms ticks from `start`, round-robin over the sockets,
    /// each stamped when written and numbered per socket.
    fn steady(&mut self, quota: u64, ticks: u64, start: Instant, frame_bytes: usize, hard: Instant) -> WriteTally {
        let mut tally = WriteTally::default();
        let mut framer = Framer::new(frame_bytes);
        let mut seqs = vec![0u64; self.sockets.len()];
        let mut next = 0usize;
        let mut attempted = 0u64;
        for tick in 1..=ticks {
            let due = start + Duration::from_millis(tick - 1);
            sleep_until(due);
            let now = Instant::now();
            if now >= hard {
                break;
            }
            tally.max_lag = tally.max_lag.max(now - due);
            let target = (u128::from(quota) * u128::from(tick) / u128::from(ticks)) as u64;
            // Bounded: at most `quota` frames in all.
            while attempted < target {
                let index = next;
                next = (next + 1) % self.sockets.len();
                attempted += 1;
                if !self.alive[index] {
                    tally.skipped += 1;
                    continue;
                }
                let frame = framer.build(stats::now_ns(), seqs[index]);
                match self.sockets[index].write_all(frame) {
                    Ok(()) => {
                        tally.written += 1;
                        seqs[index] += 1;
                    }
                    Err(error) => {
                        self.alive[index] = false;
                        tally.failed(index, &error);
                    }
                }
            }
        }
        tally
    }
}

fn emit(event: &Event) -> anyhow::Result<()> {
    let line = serde_json::to_string(event).context("encoding a report")?;
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|()| out.flush()).context("writing to the parent (stdout)")
}

/// What the parent says on the writer's stdin.
enum Control {
    Go,
    /// stdin closed: the parent is done (or gone).
    Closed,
}

/// The `floor-writer` process: see the module documentation.
pub async fn writer_main(args: WriterArgs) -> anyhow::Result<ExitCode> {
    tokio::task::spawn_blocking(move || writer(args)).await.context("the writer panicked")?
}

fn writer(args: WriterArgs) -> anyhow::Result<ExitCode> {
    ensure!(args.connections > 0 && args.writer_threads > 0, "--connections and --writer-threads must be positive");
    ensure!(args.messages > 0 || (args.frames > 0 && args.duration > 0.0), "no shape given");
    let started = Instant::now();
    let max = Duration::from_secs_f64(args.max_seconds.clamp(1.0, 86_400.0));
    let hard = started + max;
    // The last resort when the parent is gone and nothing else ends this process.
    std::thread::Builder::new()
        .name("floor-watchdog".into())
        .spawn(move || {
            std::thread::sleep(max);
            eprintln!("floor-writer: hard deadline of {:.0}s reached, exiting", max.as_secs_f64());
            std::process::exit(3);
        })
        .context("starting the watchdog thread")?;
    let (control_tx, control) = mpsc::channel();
    std::thread::Builder::new()
        .name("floor-stdin".into())
        .spawn(move || {
            // Bounded by the parent: it ends at EOF (the parent closes stdin or exits).
            for line in io::stdin().lock().lines() {
                match line {
                    Ok(line) if line.trim() == "go" => {
                        if control_tx.send(Control::Go).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            let _ = control_tx.send(Control::Closed);
        })
        .context("starting the stdin thread")?;

    // Loopback only; a deep backlog so that N quick connects are not held back by the accepts.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).context("socket")?;
    let bind_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 0));
    socket.bind(&bind_addr.into()).context("binding 127.0.0.1:0")?;
    socket.listen(4096).context("listen")?;
    let listener: TcpListener = socket.into();
    let port = listener.local_addr().context("the listener's address")?.port();
    listener.set_nonblocking(true).context("a non-blocking listener")?;
    emit(&Event::Listening { port })?;

    let accept_deadline = (started + Duration::from_secs(SETUP_SECONDS)).min(hard);
    let mut sockets = Vec::with_capacity(args.connections);
    // Bounded: N accepts, and the set-up deadline.
    while sockets.len() < args.connections {
        match listener.accept() {
            Ok((stream, _)) => {
                let index = sockets.len();
                stream.set_nonblocking(false).with_context(|| format!("socket {index}: blocking mode"))?;
                stream.set_nodelay(true).with_context(|| format!("socket {index}: TCP_NODELAY"))?;
                // A reader that stops reading cannot hold a writer thread past the deadline.
                stream
                    .set_write_timeout(Some(Duration::from_secs(10)))
                    .with_context(|| format!("socket {index}: write timeout"))?;
                sockets.push(stream);
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                if Instant::now() >= accept_deadline {
                    bail!("accepted only {} of {} connections in {SETUP_SECONDS}s", sockets.len(), args.connections);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error).context(format!("accepting connection {}", sockets.len() + 1)),
        }
    }
    drop(listener);
    emit(&Event::Accepted { connections: sockets.len() })?;

    match control.recv_timeout(hard.saturating_duration_since(Instant::now())) {
        Ok(Control::Go) => {}
        Ok(Control::Closed) | Err(RecvTimeoutError::Disconnected) => bail!("the parent closed stdin before `go`"),
        Err(RecvTimeoutError::Timeout) => bail!("no `go` from the parent before the deadline"),
    }

    // Contiguous shares in accept order (the parent splits its sockets the same way).
    let threads = args.writer_threads.min(sockets.len());
    let per = sockets.len().div_ceil(threads);
    let total_sockets = sockets.len();
    let mut shares = Vec::with_capacity(threads);
    let mut rest = sockets.into_iter();
    for _ in 0..threads {
        let share: Vec<TcpStream> = rest.by_ref().take(per).collect();
        if !share.is_empty() {
            shares.push(WriterShare { alive: vec![true; share.len()], sockets: share });
        }
    }
    let cpu_before = Cpu::now()?;
    let begun = Instant::now();
    // A common start a little ahead, so that every thread is waiting for it.
    let start = begun + Duration::from_millis(20);
    let frame_bytes = args.frame_bytes;
    let ticks = ((args.duration * 1000.0).ceil() as u64).max(1);
    // Each thread hands its share back: the sockets stay open until the parent is done reading.
    let mut handles: Vec<JoinHandle<(WriteTally, WriterShare)>> = Vec::with_capacity(shares.len());
    let mut first_socket = 0usize;
    for (index, share) in shares.into_iter().enumerate() {
        let (rounds, frames) = (args.messages, args.frames);
        // Steady: this share's part of the frames, in proportion to its sockets (exact in sum).
        let upto = |sockets: usize| (u128::from(frames) * sockets as u128 / total_sockets as u128) as u64;
        let quota = upto(first_socket + share.sockets.len()) - upto(first_socket);
        first_socket += share.sockets.len();
        let handle = std::thread::Builder::new()
            .name(format!("floor-writer-{index}"))
            .spawn(move || {
                let mut share = share;
                let tally = if rounds > 0 {
                    share.burst(rounds, start, frame_bytes, hard)
                } else {
                    share.steady(quota, ticks, start, frame_bytes, hard)
                };
                (tally, share)
            })
            .context("starting a writer thread")?;
        handles.push(handle);
    }
    let mut report = WriterReport::default();
    let mut max_lag = Duration::ZERO;
    let mut kept = Vec::with_capacity(handles.len());
    for handle in handles {
        let (tally, share) = handle.join().map_err(|_| anyhow!("a writer thread panicked"))?;
        kept.push(share);
        report.frames_written += tally.written;
        report.frames_skipped += tally.skipped;
        report.write_errors += tally.errors;
        report.first_error = report.first_error.or(tally.first_error);
        max_lag = max_lag.max(tally.max_lag);
    }
    report.writing_seconds = start.elapsed().as_secs_f64();
    report.cpu = Cpu::now()?.since(cpu_before);
    report.max_lag_ms = max_lag.as_secs_f64() * 1000.0;
    let clean = report.write_errors == 0;
    emit(&Event::Done(report))?;
    // Keep the sockets open until the parent has read everything (it then closes stdin), or the
    // deadline. A repeated `go` is ignored.
    while let Ok(Control::Go) = control.recv_timeout(hard.saturating_duration_since(Instant::now())) {}
    drop(kept);
    Ok(if clean { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

// ---------------------------------------------------------------------------------------------
// The readers (this process).

#[derive(Default)]
struct SocketState {
    /// The start of a line split over two reads.
    partial: Vec<u8>,
    next_seq: u64,
    closed: bool,
}

#[derive(Default)]
struct ReadTally {
    frames: u64,
    malformed: u64,
    read_errors: u64,
    closed_early: u64,
    sequence_gaps: u64,
    first_error: Option<String>,
}

/// One reader thread: its poll, its sockets, what it saw.
struct Reader {
    poll: Poll,
    streams: Vec<mio::net::TcpStream>,
    states: Vec<SocketState>,
    histogram: Histogram<u64>,
    tally: ReadTally,
    /// Sockets left with (maybe) more to read after MAX_READS_PER_WAKE reads.
    again: Vec<usize>,
    max_line: usize,
}

impl Reader {
    fn new(streams: Vec<TcpStream>, max_line: usize) -> anyhow::Result<Reader> {
        let poll = Poll::new().context("creating a mio::Poll")?;
        let mut registered = Vec::with_capacity(streams.len());
        for (index, stream) in streams.into_iter().enumerate() {
            // The std stream is already non-blocking (set after connect), as mio requires.
            let mut stream = mio::net::TcpStream::from_std(stream);
            poll.registry()
                .register(&mut stream, Token(index), Interest::READABLE)
                .with_context(|| format!("registering socket {index}"))?;
            registered.push(stream);
        }
        let states = (0..registered.len()).map(|_| SocketState::default()).collect();
        Ok(Reader {
            poll,
            streams: registered,
            states,
            histogram: stats::histogram(),
            tally: ReadTally::default(),
            again: Vec::new(),
            max_line,
        })
    }

    /// Reads until `stop` or the deadline; `received` counts frames for the progress line and the
    /// coordinator.
    fn run(mut self, received: &AtomicU64, stop: &AtomicBool, deadline: Instant) -> Reader {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; READ_BUFFER];
        while !stop.load(Relaxed) && Instant::now() < deadline {
            let timeout = if self.again.is_empty() { POLL_TIMEOUT } else { Duration::ZERO };
            if let Err(error) = self.poll.poll(&mut events, Some(timeout)) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                self.tally.read_errors += 1;
                self.tally.first_error.get_or_insert_with(|| format!("poll: {error}"));
                break;
            }
            let before = self.tally.frames;
            let pending = std::mem::take(&mut self.again);
            for token in events.iter().map(|event| event.token().0).chain(pending) {
                self.drain(token, &mut buf);
            }
            received.fetch_add(self.tally.frames - before, Relaxed);
        }
        self
    }

    /// Reads what socket `token` has. mio is edge-triggered: a readiness event is not repeated
    /// until new data arrives, so a socket must be read until it is drained. A read that fills less
    /// than the buffer has taken everything the kernel held at that moment (anything arriving
    /// later raises a new edge), so one read() per event is the usual case; a full buffer means
    /// there may be more, read again. After MAX_READS_PER_WAKE full reads the socket is put aside
    /// and visited again on the next loop, so that one busy socket cannot starve the others.
    fn drain(&mut self, token: usize, buf: &mut [u8]) {
        let Some(stream) = self.streams.get_mut(token) else { return };
        let state = &mut self.states[token];
        if state.closed {
            return;
        }
        for _ in 0..MAX_READS_PER_WAKE {
            match stream.read(buf) {
                Ok(0) => {
                    // The writer keeps every socket open until told: an EOF here is early.
                    state.closed = true;
                    self.tally.closed_early += 1;
                    let _ = self.poll.registry().deregister(stream);
                    return;
                }
                Ok(n) => {
                    let now = stats::now_ns();
                    take_lines(&buf[..n], now, state, &mut self.histogram, &mut self.tally, self.max_line);
                    if n < buf.len() {
                        return;
                    }
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => {
                    state.closed = true;
                    self.tally.read_errors += 1;
                    self.tally.first_error.get_or_insert_with(|| format!("read from socket {token}: {error}"));
                    let _ = self.poll.registry().deregister(stream);
                    return;
                }
            }
        }
        self.again.push(token);
    }
}

/// The complete lines of `chunk` (with the partial line kept from the previous read); the
/// incomplete end is kept for the next read.
fn take_lines(
    chunk: &[u8],
    now_ns: u64,
    state: &mut SocketState,
    histogram: &mut Histogram<u64>,
    tally: &mut ReadTally,
    max_line: usize,
) {
    let mut rest = chunk;
    // Bounded by the chunk's length.
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let (line, after) = (&rest[..end], &rest[end + 1..]);
        if state.partial.is_empty() {
            take_frame(line, now_ns, state, histogram, tally);
        } else {
            let mut whole = std::mem::take(&mut state.partial);
            whole.extend_from_slice(line);
            take_frame(&whole, now_ns, state, histogram, tally);
            whole.clear();
            state.partial = whole;
        }
        rest = after;
    }
    if !rest.is_empty() {
        if state.partial.len() + rest.len() > max_line {
            // Not a frame of ours; dropped so that memory stays bounded.
            tally.malformed += 1;
            state.partial.clear();
        } else {
            state.partial.extend_from_slice(rest);
        }
    }
}

fn take_frame(
    line: &[u8],
    now_ns: u64,
    state: &mut SocketState,
    histogram: &mut Histogram<u64>,
    tally: &mut ReadTally,
) {
    let Some((sent_at_ns, seq)) = parse_frame(line) else {
        tally.malformed += 1;
        return;
    };
    tally.frames += 1;
    stats::record(histogram, now_ns.saturating_sub(sent_at_ns) / 1000);
    if seq != state.next_seq {
        tally.sequence_gaps += 1;
    }
    state.next_seq = seq + 1;
}

// ---------------------------------------------------------------------------------------------
// The coordinator (this process).

/// The writer process, killed (and reaped) when dropped unless it was waited for.
struct WriterProcess {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
}

impl WriterProcess {
    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Closes its stdin (its signal to close the sockets and exit) and waits up to `timeout`;
    /// kills it after that. The exit status as text, and whether it was a success.
    fn finish(&mut self, timeout: Duration) -> (String, bool) {
        drop(self.stdin.take());
        let Some(mut child) = self.child.take() else { return ("not started".into(), false) };
        let until = Instant::now() + timeout;
        while Instant::now() < until {
            match child.try_wait() {
                Ok(Some(status)) => return (status.to_string(), status.success()),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(error) => return (format!("cannot wait for it: {error}"), false),
            }
        }
        let _ = child.kill();
        let _ = child.wait();
        (format!("killed after {:.0}s", timeout.as_secs_f64()), false)
    }

    fn kill(&mut self) -> String {
        drop(self.stdin.take());
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        "killed at the deadline".into()
    }
}

impl Drop for WriterProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
        }
    }
}

/// What a run measured.
struct Outcome {
    writer: Option<WriterReport>,
    writer_pid: u32,
    writer_exit: String,
    writer_ok: bool,
    timed_out: bool,
    histogram: Histogram<u64>,
    tally: ReadTally,
    reader_cpu: Cpu,
}

pub async fn run(args: Args, nofile: u64) -> anyhow::Result<ExitCode> {
    let shape = Shape::of(&args)?;
    ensure!((1..=100_000).contains(&args.connections), "--connections must be 1..=100000");
    ensure!((80..=65_536).contains(&args.frame_bytes), "--frame-bytes must be 80..=65536");
    ensure!((1..=64).contains(&args.writer_threads), "--writer-threads must be 1..=64");
    ensure!((1..=64).contains(&args.reader_threads), "--reader-threads must be 1..=64");
    let needed = args.connections as u64 + SPARE_FILES;
    ensure!(
        nofile == 0 || nofile >= needed,
        "{} connections need {needed} open files in each process; the limit is {nofile} \
         (raise it with `ulimit -n`, or lower --connections)",
        args.connections
    );
    let expected = shape.expected(args.connections);
    let received = Arc::new(AtomicU64::new(0));
    let progress = {
        let received = received.clone();
        Progress::start(args.quiet, move |elapsed| {
            format!("floor {elapsed:>5.0}s received {}/{expected}", received.load(Relaxed))
        })
    };
    let (args, outcome) = tokio::task::spawn_blocking(move || {
        let outcome = measure(&args, shape, received)?;
        anyhow::Ok((args, outcome))
    })
    .await
    .context("the floor run panicked")??;
    drop(progress);
    Ok(report(&args, shape, nofile, outcome))
}

fn measure(args: &Args, shape: Shape, received: Arc<AtomicU64>) -> anyhow::Result<Outcome> {
    let setup_deadline = Instant::now() + Duration::from_secs(SETUP_SECONDS);
    let max_seconds = SETUP_SECONDS as f64 + shape.nominal_seconds() + GRACE_SECONDS + 15.0;
    let exe = std::env::current_exe().context("locating this binary")?;
    let mut command = std::process::Command::new(exe);
    command
        .arg("floor-writer")
        .arg("--connections")
        .arg(args.connections.to_string())
        .arg("--writer-threads")
        .arg(args.writer_threads.to_string())
        .arg("--frame-bytes")
        .arg(args.frame_bytes.to_string())
        .arg("--max-seconds")
        .arg(max_seconds.to_string());
    match shape {
        Shape::Burst { rounds } => command.arg("--messages").arg(rounds.to_string()),
        Shape::Steady { duration, frames, .. } => {
            command.arg("--frames").arg(frames.to_string()).arg("--duration").arg(duration.to_string())
        }
    };
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = command.spawn().context("starting the writer process")?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let mut writer = WriterProcess { child: Some(child), stdin };
    let writer_pid = writer.pid();
    let stdout = stdout.context("the writer's stdout")?;

    let (events_tx, events) = mpsc::channel::<Event>();
    std::thread::Builder::new()
        .name("floor-writer-out".into())
        .spawn(move || {
            // Bounded by the writer's life: EOF when it exits (it is killed at the deadline).
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match serde_json::from_str::<Event>(&line) {
                    Ok(event) => {
                        if events_tx.send(event).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("floor: unexpected output of the writer process: {line}"),
                }
            }
        })
        .context("starting the thread reading the writer's output")?;
    let next_event = |what: &str| -> anyhow::Result<Event> {
        match events.recv_timeout(setup_deadline.saturating_duration_since(Instant::now())) {
            Ok(event) => Ok(event),
            Err(RecvTimeoutError::Timeout) => bail!("the writer process did not report {what} in {SETUP_SECONDS}s"),
            Err(RecvTimeoutError::Disconnected) => bail!("the writer process ended before reporting {what}"),
        }
    };

    let port = match next_event("its port")? {
        Event::Listening { port } => port,
        other => bail!("the writer process reported {other:?} before its port"),
    };
    // Loopback only: the address is built here, not taken from the writer.
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut streams = Vec::with_capacity(args.connections);
    for index in 0..args.connections {
        ensure!(
            Instant::now() < setup_deadline,
            "only {index} of {} connections opened in {SETUP_SECONDS}s",
            args.connections
        );
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connecting socket {} of {} to {addr}", index + 1, args.connections))?;
        stream.set_nonblocking(true).with_context(|| format!("socket {index}: non-blocking mode"))?;
        streams.push(stream);
    }
    match next_event("its accepts")? {
        Event::Accepted { connections } if connections == args.connections => {}
        other => bail!("the writer process reported {other:?} instead of {} accepted connections", args.connections),
    }

    // Contiguous shares in connect order, like the writer's (accept order).
    let threads = args.reader_threads.min(streams.len());
    let per = streams.len().div_ceil(threads);
    let max_line = args.frame_bytes + 64;
    let mut readers = Vec::with_capacity(threads);
    let mut rest = streams.into_iter();
    for _ in 0..threads {
        let share: Vec<TcpStream> = rest.by_ref().take(per).collect();
        if !share.is_empty() {
            readers.push(Reader::new(share, max_line)?);
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let cpu_before = Cpu::now()?;
    let go_at = Instant::now();
    let deadline = go_at + Duration::from_secs_f64(shape.nominal_seconds() + GRACE_SECONDS);
    let mut handles = Vec::with_capacity(readers.len());
    for (index, reader) in readers.into_iter().enumerate() {
        let (count, halt) = (received.clone(), stop.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("floor-reader-{index}"))
            .spawn(move || reader.run(&count, &halt, deadline));
        match spawned {
            Ok(handle) => handles.push(handle),
            Err(error) => {
                stop.store(true, Relaxed);
                return Err(error).context("starting a reader thread");
            }
        }
    }
    let go = writer.stdin.as_mut().context("the writer's stdin").and_then(|stdin| {
        stdin.write_all(b"go\n").and_then(|()| stdin.flush()).context("telling the writer process to go")
    });
    if let Err(error) = go {
        stop.store(true, Relaxed);
        return Err(error);
    }

    // Until everything the writer wrote has been read, or nothing more arrives, or the deadline.
    let mut done: Option<WriterReport> = None;
    let mut writer_gone = false;
    let mut timed_out = false;
    let (mut last_count, mut last_change) = (0u64, Instant::now());
    loop {
        let now = Instant::now();
        if now >= deadline {
            timed_out = true;
            break;
        }
        match events.recv_timeout(Duration::from_millis(50).min(deadline - now)) {
            Ok(Event::Done(report)) => done = Some(report),
            Ok(_) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                writer_gone = true;
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let count = received.load(Relaxed);
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
        if done.as_ref().is_some_and(|report| count >= report.frames_written) {
            break;
        }
        if (done.is_some() || writer_gone) && last_change.elapsed() >= STALL {
            break;
        }
    }
    stop.store(true, Relaxed);
    let mut finished = Vec::with_capacity(handles.len());
    for handle in handles {
        finished.push(handle.join().map_err(|_| anyhow!("a reader thread panicked"))?);
    }
    let reader_cpu = Cpu::now()?.since(cpu_before);
    // The writer closes its sockets first (it is the one waiting), then ours are dropped.
    let (writer_exit, writer_ok) =
        if timed_out { (writer.kill(), false) } else { writer.finish(Duration::from_secs(5)) };

    let mut histogram = stats::histogram();
    let mut tally = ReadTally::default();
    for reader in finished {
        histogram.add(&reader.histogram).context("merging the latency histograms")?;
        let t = reader.tally;
        tally.frames += t.frames;
        tally.malformed += t.malformed;
        tally.read_errors += t.read_errors;
        tally.closed_early += t.closed_early;
        tally.sequence_gaps += t.sequence_gaps;
        tally.first_error = tally.first_error.or(t.first_error);
    }
    Ok(Outcome { writer: done, writer_pid, writer_exit, writer_ok, timed_out, histogram, tally, reader_cpu })
}

fn report(args: &Args, shape: Shape, nofile: u64, outcome: Outcome) -> ExitCode {
    let expected = shape.expected(args.connections);
    let tally = &outcome.tally;
    let received = tally.frames;
    let lost = expected.saturating_sub(received);
    let writer = outcome.writer.clone().unwrap_or_default();
    let written = writer.frames_written;
    let latency = stats::percentiles(&outcome.histogram);
    let writer_per_frame = writer.cpu.per_frame(written);
    let reader_per_frame = outcome.reader_cpu.per_frame(received);

    let mut failures = Vec::new();
    if lost > 0 {
        failures.push(format!("{lost} frame(s) lost"));
    }
    if outcome.writer.is_none() {
        failures.push("the writer process sent no report".to_owned());
    }
    if !outcome.writer_ok {
        failures.push(format!("the writer process: {}", outcome.writer_exit));
    }
    if outcome.timed_out {
        failures.push("the hard deadline was reached".to_owned());
    }
    if writer.write_errors > 0 {
        failures.push(format!(
            "{} write error(s), first: {}",
            writer.write_errors,
            writer.first_error.as_deref().unwrap_or("?")
        ));
    }
    if tally.read_errors > 0 || tally.closed_early > 0 {
        failures.push(format!(
            "{} read error(s), {} socket(s) closed early, first: {}",
            tally.read_errors,
            tally.closed_early,
            tally.first_error.as_deref().unwrap_or("EOF")
        ));
    }
    if tally.malformed > 0 || tally.sequence_gaps > 0 {
        failures.push(format!("{} malformed line(s), {} sequence gap(s)", tally.malformed, tally.sequence_gaps));
    }
    let ok = failures.is_empty();

    let (shape_name, shape_line) = match shape {
        Shape::Burst { rounds } => (
            "burst",
            format!("burst: {rounds} round(s) 1 s apart, one frame to each of {} sockets per round", args.connections),
        ),
        Shape::Steady { rate, duration, .. } => (
            "steady",
            format!("steady: {rate:.0} frames/s for {duration} s, round-robin over {} sockets", args.connections),
        ),
    };
    let achieved_rate = (writer.writing_seconds > 0.0).then(|| written as f64 / writer.writing_seconds);
    let us = |v: Option<(f64, f64, f64)>| v.map(|(t, u, s)| json!({"total": t, "user": u, "system": s}));
    let value = json!({
        "scenario": "floor",
        "ok": ok,
        "shape": shape_name,
        "connections": args.connections,
        "messages": args.messages,
        "rate": args.rate,
        "duration": args.duration,
        "frame_bytes": args.frame_bytes,
        "writer_threads": args.writer_threads,
        "reader_threads": args.reader_threads,
        "nofile_limit": nofile,
        "frames": {
            "expected": expected,
            "written": written,
            "received": received,
            "lost": lost,
            "skipped_after_write_error": writer.frames_skipped,
            "write_errors": writer.write_errors,
            "read_errors": tally.read_errors,
            "closed_early": tally.closed_early,
            "malformed": tally.malformed,
            "sequence_gaps": tally.sequence_gaps,
        },
        "latency": latency,
        "writer": {
            "pid": outcome.writer_pid,
            "exit": outcome.writer_exit,
            "reported": outcome.writer.is_some(),
            "writing_seconds": writer.writing_seconds,
            "achieved_rate_per_s": achieved_rate,
            "max_lag_ms": writer.max_lag_ms,
            "cpu_user_s": writer.cpu.user_s,
            "cpu_system_s": writer.cpu.system_s,
            "cpu_us_per_frame": us(writer_per_frame),
        },
        "reader": {
            "cpu_user_s": outcome.reader_cpu.user_s,
            "cpu_system_s": outcome.reader_cpu.system_s,
            "cpu_us_per_frame": us(reader_per_frame),
        },
        "timed_out": outcome.timed_out,
        "failures": failures,
    });
    let per_frame_line = |cpu: &Cpu, per: Option<(f64, f64, f64)>| match per {
        Some((t, u, s)) => format!("{:.2} s = {t:.2} us/frame (user {u:.2} us, system {s:.2} us)", cpu.total()),
        None => format!("{:.2} s (no frames)", cpu.total()),
    };
    let steady_line = match (shape, achieved_rate) {
        (Shape::Steady { .. }, Some(rate)) => format!(
            "; {rate:.0} frames/s achieved over {:.2} s, at most {:.1} ms behind schedule",
            writer.writing_seconds, writer.max_lag_ms
        ),
        _ => String::new(),
    };
    let human = format!(
        "floor (no gateway, loopback TCP only): {shape_line}; {}-byte frames; {} writer thread(s) in process {}, {} mio reader thread(s)\n\
         frames: expected {expected}, written {written}, received {received}, lost {lost}{steady_line}\n\
         latency (receive - sent_at): {}\n\
         writer CPU: {}\n\
         reader CPU: {}\n\
         failures: {}",
        args.frame_bytes,
        args.writer_threads,
        outcome.writer_pid,
        args.reader_threads,
        latency.line(),
        per_frame_line(&writer.cpu, writer_per_frame),
        per_frame_line(&outcome.reader_cpu, reader_per_frame),
        if failures.is_empty() { "none".to_owned() } else { failures.join("; ") },
    );
    crate::finish(args.json, &human, &value, ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_padded_and_parse_back() {
        let mut framer = Framer::new(300);
        let frame = framer.build(1_700_000_000_123_456_789, 42).to_vec();
        assert_eq!(frame.len(), 300);
        assert_eq!(frame.last(), Some(&b'\n'));
        assert_eq!(parse_frame(&frame[..frame.len() - 1]), Some((1_700_000_000_123_456_789, 42)));
        assert_eq!(parse_frame(b"{\"other\":1}"), None);
    }

    #[test]
    fn lines_split_over_reads_are_joined() {
        let mut framer = Framer::new(100);
        let mut bytes = framer.build(stats::now_ns(), 0).to_vec();
        bytes.extend_from_slice(framer.build(stats::now_ns(), 1));
        let (mut state, mut histogram, mut tally) = (SocketState::default(), stats::histogram(), ReadTally::default());
        for piece in bytes.chunks(37) {
            take_lines(piece, stats::now_ns(), &mut state, &mut histogram, &mut tally, 164);
        }
        assert_eq!((tally.frames, tally.malformed, tally.sequence_gaps), (2, 0, 0));
        assert!(state.partial.is_empty());
    }
}
