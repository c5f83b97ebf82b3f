from services.gatekeeper.app import main

main()
