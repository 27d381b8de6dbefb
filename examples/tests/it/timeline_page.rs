//! The timeline page of a simulated run (`synod sim --html`, synod-sim's `timeline`) opened
//! in a real headless browser: for a known seed of the Consistent Core under crashes,
//! partitions, pauses, clock jumps and loss, the page's DOM holds one lane per node, a
//! leader's band, every fault of the run's fault log and the verdict, and its screenshot is
//! not blank; for a seed where reads served from a node's own state (a deliberately broken
//! client path) violate linearizability, the page highlights the checker's culprit and
//! opens on it. The same seed draws the same page, byte for byte, and the register and the
//! membership simulations draw theirs too.
//!
//! The browser is Debian's `chromium`. Without it on `PATH` the browser tests print a
//! notice and pass, so that a fresh checkout's `cargo test` works; CI sets
//! `SYNOD_REQUIRE_CHROMIUM=1`, which turns its absence into a failure. Each test launches
//! the browser once (the DOM and the screenshot from one run).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use synod_examples::simulate::raft_kv::{self, NodeOptions, Request, Tally};
use synod_examples::simulate::{
    FaultSelection, KvClients, RunSummary, Settings, System, run_seed_drawn,
};
use synod_sim::timeline::Recorder;
use synod_sim::{KvModel, Linearizability, Verdict};

/// The browser's commands, in the order they are tried.
const BROWSERS: [&str; 2] = ["chromium", "chromium-browser"];
/// How long one browser run may take before the test fails.
const BROWSER_DEADLINE: Duration = Duration::from_secs(60);
/// The browser window, in pixels.
const WINDOW: (u32, u32) = (1200, 900);

/// The browser to run, if there is one. A missing browser is a failure when
/// `SYNOD_REQUIRE_CHROMIUM=1`, and a printed notice otherwise.
fn browser(test: &str) -> Option<&'static str> {
    let found = BROWSERS.into_iter().find(|b| {
        Command::new(b)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_none() {
        let required = std::env::var("SYNOD_REQUIRE_CHROMIUM").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "chromium not found on PATH and SYNOD_REQUIRE_CHROMIUM=1: install it \
             (Debian/Ubuntu: `apt-get install -y chromium`)"
        );
        println!(
            "{test}: skipped, chromium not found on PATH (install it, or set \
             SYNOD_REQUIRE_CHROMIUM=1 to make this a failure)"
        );
    }
    found
}

/// What the browser made of a page: its DOM after the page's script ran, and a screenshot.
struct Rendered {
    dom: String,
    /// RGBA rows of the screenshot.
    pixels: Vec<[u8; 4]>,
}

/// Opens `page` in headless `browser` once: the DOM and a screenshot of the window.
fn render(browser: &str, page: &Path, dir: &Path) -> Rendered {
    let shot = dir.join("shot.png");
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            "--no-first-run",
            "--disable-extensions",
        ])
        .arg(format!("--user-data-dir={}", dir.join("profile").display()))
        .arg(format!("--window-size={},{}", WINDOW.0, WINDOW.1))
        .arg(format!("--screenshot={}", shot.display()))
        .arg("--dump-dom")
        .arg(format!("file://{}", page.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the browser");
    let mut stdout = child.stdout.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut dom = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut dom).map(|_| dom)
    });
    let deadline = Instant::now() + BROWSER_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the browser") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the browser did not finish within {BROWSER_DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "the browser failed: {status}");
    let dom = reader
        .join()
        .expect("reader thread")
        .expect("the DOM as text");
    let decoder = png::Decoder::new(std::fs::File::open(&shot).expect("the screenshot"));
    let mut reader = decoder.read_info().expect("a PNG");
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).expect("a frame");
    let channels = match info.color_type {
        png::ColorType::Rgba => 4,
        png::ColorType::Rgb => 3,
        other => panic!("unexpected screenshot colour type {other:?}"),
    };
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(channels)
        .map(|p| [p[0], p[1], p[2], if channels == 4 { p[3] } else { 255 }])
        .collect();
    Rendered { dom, pixels }
}

/// How many pixels are within a small distance of `rgb`.
fn pixels_near(pixels: &[[u8; 4]], rgb: [u8; 3]) -> usize {
    pixels
        .iter()
        .filter(|p| (0..3).all(|i| p[i].abs_diff(rgb[i]) <= 12))
        .count()
}

/// `text` as the browser serializes it inside an element.
fn escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The number in `attribute="N"` of the first element holding `marker` in `dom`.
fn attribute_after(dom: &str, marker: &str, attribute: &str) -> Option<u64> {
    let at = dom.find(marker)?;
    let element = &dom[dom[..at].rfind('<')?..];
    let element = &element[..element.find('>')?];
    let key = format!("{attribute}=\"");
    let start = element.find(&key)? + key.len();
    let end = start + element[start..].find('"')?;
    element[start..end].parse().ok()
}

/// The Consistent Core for the known seed: every fault kind the page draws, a short run.
fn known_settings() -> Settings {
    let faults =
        FaultSelection::parse("crash,partition,pause,clock-jump,loss,clog").expect("fault kinds");
    Settings::new(System::RAFT_KV, 3, 3_000, faults).expect("valid settings")
}

/// The known seed.
const KNOWN_SEED: u64 = 1;

#[test]
fn the_same_seed_draws_the_same_page_byte_for_byte() {
    let settings = known_settings();
    let first = run_seed_drawn(KNOWN_SEED, &settings)
        .timeline
        .expect("raft-kv draws its runs");
    let again = run_seed_drawn(KNOWN_SEED, &settings)
        .timeline
        .expect("raft-kv draws its runs");
    let page = first.to_html();
    assert_eq!(page, again.to_html(), "the same seed drew two pages");
    let other = run_seed_drawn(KNOWN_SEED + 1, &settings)
        .timeline
        .expect("raft-kv draws its runs");
    assert_ne!(page, other.to_html(), "two seeds drew the same page");
}

#[test]
fn a_known_seed_draws_lanes_leaders_faults_and_the_verdict_in_a_browser() {
    let test =
        "timeline_page::a_known_seed_draws_lanes_leaders_faults_and_the_verdict_in_a_browser";
    let Some(browser) = browser(test) else {
        return;
    };
    let summary = run_seed_drawn(KNOWN_SEED, &known_settings());
    assert_eq!(summary.verdict, Verdict::Pass, "{summary}");
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("run.html");
    let timeline = summary.timeline.as_ref().expect("raft-kv draws its runs");
    std::fs::write(&page, timeline.to_html()).expect("write the page");
    let shown = render(browser, &page, dir.path());
    let dom = &shown.dom;

    assert_eq!(
        dom.matches("<g class=\"lane\" data-node=").count(),
        3,
        "one lane per node"
    );
    assert!(
        dom.contains("class=\"band role-leader\""),
        "no leader band drawn"
    );
    assert!(
        dom.contains("<div id=\"verdict\" class=\"verdict-pass\">verdict: pass</div>"),
        "no verdict"
    );
    // Every fault of the run's log is listed, and the faults the run applied are drawn.
    let faults: Vec<String> = summary
        .schedule
        .entries()
        .map(ToString::to_string)
        .collect();
    assert!(
        faults.iter().any(|f| f.contains("crash"))
            && faults.iter().any(|f| f.contains("partition")),
        "the known seed should crash and partition: {faults:#?}"
    );
    for fault in &faults {
        assert!(
            dom.contains(&format!("\">{}</li>", escaped(fault))),
            "fault not listed: {fault}"
        );
    }
    for drawn in [
        "class=\"event event-crash\"",
        "class=\"event event-restart\"",
        "class=\"region region-partition\"",
        "class=\"region region-down\"",
    ] {
        assert!(dom.contains(drawn), "nothing drawn with {drawn}");
    }
    // Not blank: most of the window is not the background, and the leader's colour shows.
    let background = pixels_near(&shown.pixels, [255, 255, 255]);
    assert!(
        background * 10 < shown.pixels.len() * 9,
        "the screenshot is almost blank: {background} of {} pixels white",
        shown.pixels.len()
    );
    assert!(
        pixels_near(&shown.pixels, [0x1f, 0x5f, 0xbf]) > 500,
        "no leader band visible in the screenshot"
    );
}

/// The clients of the broken run: every read served from the node's own state, which may
/// be stale.
fn stale_reads() -> KvClients<raft_kv::RaftKvNode> {
    KvClients::new(3).with_reads(&[Request::FollowerRead])
}

#[test]
fn a_violation_opens_on_the_culprit_highlighted_in_a_browser() {
    let test = "timeline_page::a_violation_opens_on_the_culprit_highlighted_in_a_browser";
    let Some(browser) = browser(test) else {
        return;
    };
    // The first seed whose stale reads the checker catches.
    let (summary, culprit) = (0..100)
        .find_map(|seed| {
            let report = raft_kv::simulation(
                super::core_sim::config(3),
                seed,
                NodeOptions::default(),
                stale_reads(),
                &Tally::new(),
            )
            .record(Recorder::protocol())
            .run();
            if report.failure.is_some() {
                return None;
            }
            let (verdict, culprit) = Linearizability::new(KvModel).check_explained(&report.history);
            let culprit = culprit?;
            assert!(matches!(verdict, Verdict::Violation(_)));
            Some((RunSummary::judged(report), culprit))
        })
        .expect("stale reads caught in 100 seeds");
    println!("stale reads caught at seed {}: {culprit:?}", summary.seed);
    let dir = tempfile::tempdir().expect("temp dir");
    let page = dir.path().join("run.html");
    let timeline = summary.timeline.as_ref().expect("recorded");
    std::fs::write(&page, timeline.to_html()).expect("write the page");
    let shown = render(browser, &page, dir.path());
    let dom = &shown.dom;

    assert!(dom.contains("class=\"verdict-violation\">verdict: VIOLATION: linearizability"));
    // The culprit is drawn, once, highlighted; the operations involved are marked.
    assert_eq!(dom.matches(" culprit\" data-op=").count(), 1, "one culprit");
    let op = attribute_after(dom, " culprit\" data-op=", "data-op").expect("the culprit's number");
    assert_eq!(op, culprit.operation as u64, "the checker's culprit");
    for involved in &culprit.involved {
        assert!(
            dom.contains(&format!(" involved\" data-op=\"{involved}\"")),
            "operation {involved} involved but not marked"
        );
    }
    // The page opened on it: the view holds the culprit's invocation and is not the whole run.
    let start = attribute_after(dom, "id=\"chart\"", "data-view-start").expect("view start");
    let end = attribute_after(dom, "id=\"chart\"", "data-view-end").expect("view end");
    let invoked = summary.history.operations()[culprit.operation]
        .invoked_at
        .as_micros();
    assert!(
        start <= invoked && invoked <= end,
        "view {start}..{end} misses the culprit at {invoked}"
    );
    assert!(
        end - start < summary.end_time.as_micros() / 2,
        "the view did not zoom in on the culprit"
    );
    // And the highlight shows on screen.
    assert!(
        pixels_near(&shown.pixels, [0xe0, 0x00, 0x7a]) > 20,
        "the culprit's highlight is not visible in the screenshot"
    );
}

#[test]
fn every_simulated_system_draws_its_run() {
    for (system, nodes) in [(System::REGISTER, 3), (System::MEMBERSHIP, 4)] {
        let settings =
            Settings::new(system, nodes, 2_000, FaultSelection::Swarm).expect("valid settings");
        let summary = run_seed_drawn(KNOWN_SEED, &settings);
        let timeline = summary
            .timeline
            .unwrap_or_else(|| panic!("{} drew no page", system.name()));
        assert_eq!(timeline.nodes(), nodes, "{}", system.name());
        let page = timeline.to_html();
        assert!(
            page.contains(&format!("synod sim {} --seed {KNOWN_SEED}", system.name())),
            "{}",
            system.name()
        );
        assert!(
            !page.contains("\"kinds\":[]"),
            "{}: no messages",
            system.name()
        );
    }
}
