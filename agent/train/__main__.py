from agent.train.cli import main

raise SystemExit(main())
