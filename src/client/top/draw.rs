//! Draws a [`View`] into a ratatui frame: header, stations and the
//! events-per-second sparkline, lines, subscriptions, the newest events,
//! and a footer with the keys. Below [`FULL`] only the focused pane is
//! drawn (`tab` moves on); below [`MIN`] one line says the terminal is too
//! small. Pure: tests render into ratatui's `TestBackend`.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Row, Sparkline, Table};
use ratatui::Frame;

use super::model::{Pane, View};

/// Size (columns, rows) for every pane at once.
pub const FULL: (u16, u16) = (80, 24);
/// Smallest size drawn at all (header, one pane, footer).
pub const MIN: (u16, u16) = (40, 8);

pub fn draw(frame: &mut Frame, view: &View) {
    let area = frame.area();
    if area.width < MIN.0 || area.height < MIN.1 {
        let text = format!("terminal too small (need {}x{})", MIN.0, MIN.1);
        frame.render_widget(Paragraph::new(text), area);
        return;
    }
    let [header, body, footer] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area);
    draw_header(frame, header, view);
    let full = area.width >= FULL.0 && area.height >= FULL.1;
    if full {
        let tall = view.stations.len().max(4) as u16 + 2;
        let subs = (view.subscriptions.len().max(1) as u16 + 3).min(8);
        let [top, lines, subscriptions, events] = Layout::vertical([
            Constraint::Length(tall),
            Constraint::Fill(1),
            Constraint::Length(subs),
            Constraint::Fill(1),
        ])
        .areas(body);
        let [stations, spark] =
            Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(top);
        draw_pane(frame, stations, view, Pane::Stations);
        draw_spark(frame, spark, view);
        draw_pane(frame, lines, view, Pane::Lines);
        draw_pane(frame, subscriptions, view, Pane::Subscriptions);
        draw_pane(frame, events, view, Pane::Events);
    } else {
        draw_pane(frame, body, view, view.focus);
    }
    draw_footer(frame, footer, view, full);
}

fn draw_header(frame: &mut Frame, area: Rect, view: &View) {
    let line = match &view.problem {
        Some(why) => Line::from(vec![
            Span::styled("metro top · ", Style::new().add_modifier(Modifier::BOLD)),
            Span::styled(why.clone(), Style::new().fg(Color::Red)),
        ]),
        None => Line::from(Span::styled(
            view.header.clone(),
            Style::new().add_modifier(Modifier::BOLD),
        )),
    };
    frame.render_widget(Paragraph::new(line), area);
}

fn draw_footer(frame: &mut Frame, area: Rect, view: &View, full: bool) {
    let text = if view.editing {
        format!(
            "filter lines: {}▏  (Enter keeps it, Esc clears it)",
            view.filter
        )
    } else {
        let mut t = if full {
            String::from("q quit · tab pane · ↑↓ scroll · / filter lines")
        } else {
            format!(
                "tab next pane ({}x{} shows all) · q quit · / filter",
                FULL.0, FULL.1
            )
        };
        if !view.filter.is_empty() {
            t.push_str(&format!(" · filter: {} (Esc clears)", view.filter));
        }
        t
    };
    frame.render_widget(
        Paragraph::new(text).style(Style::new().fg(Color::DarkGray)),
        area,
    );
}

fn block(view: &View, pane: Pane, title: String) -> Block<'static> {
    let style = if view.focus == pane {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    };
    Block::new()
        .borders(Borders::ALL)
        .border_style(style)
        .title(title)
}

/// Rows `from..` that fit in `height` (borders and the header row taken).
fn window<T>(rows: &[T], scroll: usize, height: u16) -> &[T] {
    let fit = height.saturating_sub(3) as usize;
    let from = scroll.min(rows.len().saturating_sub(fit.max(1)));
    &rows[from..rows.len().min(from + fit)]
}

fn header_row(cells: &[&'static str]) -> Row<'static> {
    Row::new(cells.to_vec()).style(Style::new().add_modifier(Modifier::BOLD))
}

fn draw_pane(frame: &mut Frame, area: Rect, view: &View, pane: Pane) {
    let i = Pane::ALL.iter().position(|p| *p == pane).unwrap_or(0);
    let scroll = view.scroll[i];
    match pane {
        Pane::Stations => {
            let rows =
                window(&view.stations, scroll, area.height + 1)
                    .iter()
                    .map(|(name, status, ok)| {
                        let glyph = if *ok { "●" } else { "○" };
                        let color = if *ok { Color::Green } else { Color::Yellow };
                        Row::new(vec![
                            Span::styled(format!("{glyph} {name}"), Style::new().fg(color)),
                            Span::raw(status.clone()),
                        ])
                    });
            let t = Table::new(rows, [Constraint::Length(11), Constraint::Fill(1)]).block(block(
                view,
                pane,
                " Stations ".into(),
            ));
            frame.render_widget(t, area);
        }
        Pane::Lines => {
            let title = if view.filter.is_empty() {
                format!(" Lines ({}) ", view.lines_total)
            } else {
                format!(
                    " Lines ({} of {}, filter: {}) ",
                    view.lines.len(),
                    view.lines_total,
                    view.filter
                )
            };
            let rows = window(&view.lines, scroll, area.height).iter().map(|l| {
                Row::new(vec![
                    l.line.clone(),
                    l.name.clone(),
                    l.owner.clone(),
                    l.last.clone(),
                    l.events.clone(),
                    l.unread.clone(),
                ])
            });
            let t = Table::new(
                rows,
                [
                    Constraint::Fill(3),
                    Constraint::Fill(1),
                    Constraint::Fill(2),
                    Constraint::Length(16),
                    Constraint::Length(6),
                    Constraint::Length(9),
                ],
            )
            .header(header_row(&[
                "LINE", "NAME", "OWNER", "LAST", "EVENTS", "UNREAD",
            ]))
            .block(block(view, pane, title));
            frame.render_widget(t, area);
        }
        Pane::Subscriptions => {
            let rows = window(&view.subscriptions, scroll, area.height)
                .iter()
                .map(|s| {
                    Row::new(vec![
                        s.identity.clone(),
                        s.sub.clone(),
                        s.mode.clone(),
                        s.ack.clone(),
                        s.lag_events.clone(),
                        s.lag_bytes.clone(),
                        s.unacked.clone(),
                        s.oldest_unacked.clone(),
                    ])
                });
            let t = Table::new(
                rows,
                [
                    Constraint::Fill(2),
                    Constraint::Length(6),
                    Constraint::Length(17),
                    Constraint::Length(8),
                    Constraint::Length(7),
                    Constraint::Length(10),
                    Constraint::Length(7),
                    Constraint::Length(7),
                ],
            )
            .header(header_row(&[
                "IDENTITY",
                "SUB",
                "MODE",
                "ACK",
                "LAG EV",
                "LAG BYTES",
                "UNACKED",
                "OLDEST",
            ]))
            .block(block(
                view,
                pane,
                format!(" Subscriptions ({}) ", view.subscriptions.len()),
            ));
            frame.render_widget(t, area);
        }
        Pane::Events => {
            // Newest at the bottom; scrolling goes back in time.
            let fit = area.height.saturating_sub(3) as usize;
            let back = scroll.min(view.events.len().saturating_sub(fit));
            let end = view.events.len() - back;
            let shown = &view.events[end.saturating_sub(fit)..end];
            let rows = shown.iter().map(|e| {
                Row::new(vec![
                    e.ts.get(11..19).unwrap_or(&e.ts).to_string(),
                    crate::client::output::short(&e.line).to_string(),
                    e.from.clone(),
                    e.kind.clone(),
                    e.text.replace('\n', "⏎"),
                ])
            });
            let t = Table::new(
                rows,
                [
                    Constraint::Length(8),
                    Constraint::Fill(2),
                    Constraint::Fill(1),
                    Constraint::Length(8),
                    Constraint::Fill(3),
                ],
            )
            .header(header_row(&["TIME", "LINE", "FROM", "KIND", "TEXT"]))
            .block(block(view, pane, " Newest events (UTC) ".into()));
            frame.render_widget(t, area);
        }
    }
}

fn draw_spark(frame: &mut Frame, area: Rect, view: &View) {
    let title = format!(" Events/s, last minute: {} ", view.last_minute);
    // The newest seconds on the right, as many as fit.
    let fit = area.width.saturating_sub(2) as usize;
    let data = &view.spark[view.spark.len().saturating_sub(fit)..];
    let s = Sparkline::default()
        .block(Block::new().borders(Borders::ALL).title(title))
        .data(data)
        .style(Style::new().fg(Color::Green));
    frame.render_widget(s, area);
}

/// The text of a rendered buffer, one line per row, trailing spaces cut
/// (tests and docs/top.md's capture).
pub fn text(buffer: &Buffer) -> String {
    let mut out = String::new();
    for y in 0..buffer.area.height {
        let mut row = String::new();
        for x in 0..buffer.area.width {
            row.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(row.trim_end());
        out.push('\n');
    }
    out
}
