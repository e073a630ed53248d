//! `metroctl top`: a live full-screen view of metrod — stations, lines
//! (owner, last activity, unread), subscriptions (lag, unacked), events
//! per second and the newest events. Files: [`model`] (the state, pure:
//! answers and events in, a [`model::View`] out), [`draw`] (the view into
//! a ratatui frame), [`feed`] (the threads that ask metrod); this file is
//! the terminal loop: raw mode and the alternate screen, restored on every
//! way out (return, error, panic, SIGINT/SIGTERM/SIGHUP), keys, and at
//! most [`MAX_FPS`] redraws a second.

pub mod draw;
pub mod feed;
pub mod model;

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::mpsc::{sync_channel, TryRecvError};
use std::time::{Duration, Instant};

use clap::Args;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::Terminal;

use self::feed::Msg;
use self::model::{Action, Key, Top};
use super::CliError;

/// Redraws per second at most.
pub const MAX_FPS: u32 = 10;
/// Messages from the feed taken between two looks at the keyboard (so a
/// flood of events cannot make keys wait).
const BATCH: usize = 4096;

#[derive(Debug, Args)]
pub struct TopArgs {
    /// Show only lines (and their events) whose URI or name contains TEXT;
    /// `/` changes it while top runs.
    #[arg(long, value_name = "TEXT")]
    pub filter: Option<String>,
}

/// Puts the terminal back: raw mode off, main screen, cursor shown.
fn restore() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
    let _ = std::io::stdout().flush();
}

/// The terminal in raw mode on the alternate screen while it lives.
struct Screen;

impl Screen {
    fn enter() -> Result<Screen, CliError> {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            hook(info);
        }));
        let screen = Screen;
        terminal::enable_raw_mode().map_err(CliError::Io)?;
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        )
        .map_err(CliError::Io)?;
        Ok(screen)
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        restore();
    }
}

fn key(k: event::KeyEvent) -> Option<Key> {
    if k.kind == KeyEventKind::Release {
        return None;
    }
    Some(match k.code {
        KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => Key::Interrupt,
        KeyCode::Char(c) => Key::Char(c),
        KeyCode::Enter => Key::Enter,
        KeyCode::Esc => Key::Esc,
        KeyCode::Backspace => Key::Backspace,
        KeyCode::Tab => Key::Tab,
        KeyCode::BackTab => Key::BackTab,
        KeyCode::Up => Key::Up,
        KeyCode::Down => Key::Down,
        _ => return None,
    })
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn run(socket: &Path, args: TopArgs) -> Result<(), CliError> {
    if super::output::json_forced() {
        return Err(CliError::Usage(
            "top is a live view for a terminal and has no JSON form; use `metroctl stats --json`, `lines --json`, `stations --json` or `claims --json`".into(),
        ));
    }
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(
            "top needs a terminal; in scripts use `metroctl stats --json`, `lines --json` or `tail --follow`".into(),
        ));
    }
    // Signals become a clean stop (the terminal is restored); blocked
    // before any thread starts, so only the watcher receives them.
    let mut signals = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        signals.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&signals), None)
        .map_err(|e| CliError::Io(e.into()))?;
    let (tx, rx) = sync_channel::<Msg>(1024);
    let stop = tx.clone();
    std::thread::Builder::new()
        .name("metroctl-top-signals".into())
        .spawn(move || {
            if signals.wait().is_ok() {
                let _ = stop.send(Msg::Stop);
            }
        })
        .map_err(CliError::Io)?;
    let restart = feed::start(socket, tx)?;
    let mut backfill: Option<u64> = None;

    let mut top = Top::new(args.filter);
    let _screen = Screen::enter()?;
    let mut terminal =
        Terminal::new(CrosstermBackend::new(std::io::stdout())).map_err(CliError::Io)?;
    let frame_time = Duration::from_secs(1) / MAX_FPS;
    let mut last_draw: Option<Instant> = None;
    let mut dirty = true;
    loop {
        if event::poll(frame_time / 2).map_err(CliError::Io)? {
            match event::read().map_err(CliError::Io)? {
                Event::Key(k) => match key(k).map(|k| top.key(k)) {
                    Some(Action::Quit) => return Ok(()),
                    Some(Action::Redraw) => dirty = true,
                    _ => {}
                },
                Event::Resize(..) => dirty = true,
                _ => {}
            }
        }
        for _ in 0..BATCH {
            let msg = match rx.try_recv() {
                Ok(m) => m,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => return Ok(()),
            };
            dirty = true;
            match msg {
                Msg::Snapshot(s) => {
                    top.snapshot(*s);
                    // A cursor older than the subscription's start (an
                    // agent that came after top): start again from it, once.
                    if let Some(at) = top.backfill_wanted().filter(|at| backfill != Some(*at)) {
                        backfill = Some(at);
                        restart.now();
                    }
                }
                Msg::Subscribed(offset, end) => top.subscribed(offset, end),
                Msg::Seed(entries) => top.seed(&entries, now_ms()),
                Msg::Event(offset, ev) => top.event(offset, &ev, now_ms()),
                Msg::Gap(offset) => top.gap(offset),
                Msg::Down(why) => top.down(why),
                Msg::Stop => return Ok(()),
            }
        }
        // Ages and the sparkline move with time: redraw once a second anyway.
        let since = last_draw.map(|t| t.elapsed());
        let due = match since {
            None => true,
            Some(s) => s >= frame_time && (dirty || s >= Duration::from_secs(1)),
        };
        if due {
            let view = top.view(now_ms());
            terminal
                .draw(|f| draw::draw(f, &view))
                .map_err(CliError::Io)?;
            last_draw = Some(Instant::now());
            dirty = false;
        }
    }
}
