from remora.entry import main

main()
