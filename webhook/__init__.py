"""The mutating admission webhook that injects AutoCrane's containers into opted-in pods."""
