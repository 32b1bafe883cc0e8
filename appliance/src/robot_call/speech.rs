//! [`SpeechCache`]: the robot's `say` texts synthesised once per text and voice, on a
//! blocking thread, and kept for the next call.
//!
//! Owns: the cache (bounded, oldest entry out first) and the timeout on one synthesis.
//! Must not: run the engine on an async worker thread (espeak-ng blocks for hundreds of ms).

use callgate_media::prompt::Prompt;
use callgate_robot::{SpeechStyle, TextToSpeech};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Entries kept by default (a campaign's script has a handful of texts per contact).
pub const DEFAULT_CAPACITY: usize = 1_024;
/// The longest one synthesis may take before the playback counts as failed.
pub const SYNTHESIS_TIMEOUT: Duration = Duration::from_secs(10);

type Key = (String, Option<String>);

#[derive(Default)]
struct Entries {
    map: HashMap<Key, Prompt>,
    order: VecDeque<Key>,
}

/// A TTS engine with a cache of what it has said.
pub struct SpeechCache {
    engine: Arc<dyn TextToSpeech>,
    entries: Mutex<Entries>,
    capacity: usize,
}

impl std::fmt::Debug for SpeechCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpeechCache")
            .field("entries", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl SpeechCache {
    /// A cache over `engine` keeping at most `capacity` texts.
    pub fn new(engine: Arc<dyn TextToSpeech>, capacity: usize) -> SpeechCache {
        SpeechCache {
            engine,
            entries: Mutex::new(Entries::default()),
            capacity: capacity.max(1),
        }
    }

    /// Texts held now.
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        // A panic while holding the lock leaves a consistent map (inserts are single calls).
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached speech for `text` in `voice`, if any.
    pub fn cached(&self, text: &str, voice: Option<&str>) -> Option<Prompt> {
        self.lock()
            .map
            .get(&(text.to_owned(), voice.map(str::to_owned)))
            .cloned()
    }

    /// `text` spoken in `voice` (the engine's default when `None`): from the cache, or
    /// synthesised on a blocking thread and cached. The error says why, for the log.
    pub async fn speak(
        self: &Arc<Self>,
        text: String,
        voice: Option<String>,
    ) -> Result<Prompt, String> {
        if let Some(p) = self.cached(&text, voice.as_deref()) {
            metrics::counter!("callgate_robot_tts_total", "result" => "cached").increment(1);
            return Ok(p);
        }
        let me = Arc::clone(self);
        let (t, v) = (text.clone(), voice.clone());
        let job = tokio::task::spawn_blocking(move || {
            let style = SpeechStyle {
                voice: v,
                ..SpeechStyle::default()
            };
            me.engine.synthesize(&t, &style).map(|s| s.to_prompt())
        });
        let result = match tokio::time::timeout(SYNTHESIS_TIMEOUT, job).await {
            Err(_) => Err(format!(
                "speech synthesis took longer than {} s",
                SYNTHESIS_TIMEOUT.as_secs()
            )),
            Ok(Err(e)) => Err(format!("speech synthesis task failed: {e}")),
            Ok(Ok(Err(e))) => Err(e.to_string()),
            Ok(Ok(Ok(prompt))) => Ok(prompt),
        };
        match &result {
            Ok(prompt) => {
                metrics::counter!("callgate_robot_tts_total", "result" => "synthesised")
                    .increment(1);
                let mut entries = self.lock();
                let key = (text, voice);
                if entries.map.insert(key.clone(), prompt.clone()).is_none() {
                    entries.order.push_back(key);
                }
                while entries.map.len() > self.capacity {
                    match entries.order.pop_front() {
                        Some(old) => {
                            entries.map.remove(&old);
                        }
                        None => break,
                    }
                }
            }
            Err(_) => {
                metrics::counter!("callgate_robot_tts_total", "result" => "failed").increment(1)
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use callgate_robot::{Speech, TtsError};
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Counts its calls; "speaks" one sample per character.
    struct CountingEngine(AtomicUsize);

    impl TextToSpeech for CountingEngine {
        fn synthesize(&self, text: &str, _style: &SpeechStyle) -> Result<Speech, TtsError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            if text.is_empty() {
                return Err(TtsError::EmptyText);
            }
            Ok(Speech::from_samples(vec![1_000; text.len()]))
        }
    }

    #[tokio::test]
    async fn a_text_is_synthesised_once_per_voice_and_the_oldest_entry_leaves_first() {
        let engine = Arc::new(CountingEngine(AtomicUsize::new(0)));
        let cache = Arc::new(SpeechCache::new(engine.clone(), 2));
        let a = cache.speak("hello".into(), None).await.unwrap();
        assert_eq!(a.len(), 5);
        cache.speak("hello".into(), None).await.unwrap();
        assert_eq!(
            engine.0.load(Ordering::SeqCst),
            1,
            "second time from the cache"
        );
        cache
            .speak("hello".into(), Some("en-gb".into()))
            .await
            .unwrap();
        assert_eq!(
            engine.0.load(Ordering::SeqCst),
            2,
            "another voice is another entry"
        );
        cache.speak("bye".into(), None).await.unwrap();
        assert_eq!(cache.len(), 2);
        assert!(
            cache.cached("hello", None).is_none(),
            "the oldest went first"
        );
        assert!(cache.cached("bye", None).is_some());
    }

    #[tokio::test]
    async fn an_engine_error_is_reported_and_not_cached() {
        let engine = Arc::new(CountingEngine(AtomicUsize::new(0)));
        let cache = Arc::new(SpeechCache::new(engine.clone(), 8));
        let e = cache.speak(String::new(), None).await.unwrap_err();
        assert!(e.contains("empty"), "{e}");
        assert!(cache.is_empty());
    }
}
