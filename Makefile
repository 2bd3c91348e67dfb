# Shortcuts for ./run.sh (the README's two quick-start commands) and the benchmark corpus.
.PHONY: setup demo test corpus

setup:
	@bash scripts/setup.sh

demo:
	./run.sh demo

test:
	./run.sh test

corpus:
	bash ../shared/corpus/real-music.sh corpus/orchestral
	bash ../shared/corpus/real-music.sh corpus/beats --set beats
